"""SensorScenes: a seeded, built-in camera + lidar + radar object-classification dataset.

Every sample is one object in front of a vehicle, seen by three sensors at once. Each
sensor measures a *different* physical property of the object, and each weather/lighting
condition degrades a *different* sensor, so that every sensor alone beats chance, no
sensor alone is enough, and fusing them clearly wins.

Classes (6): car, truck, pedestrian, cyclist, animal, cone.

The latent object (per sample): class, distance d ~ U(8, 40) m, azimuth, heading, and the
class's physical attributes drawn around the values in ``CLASSES`` (width, height, speed,
radar cross-section, lidar reflectivity, colour).

How each modality is produced:

* ``camera`` — RGB image ``[3, 16, 16]`` in [0, 1]. A road/sky background with noise; the
  object is a filled silhouette whose *apparent* size is (physical size / d) and whose
  shape is the class's (boxy car and truck, tall ellipses for pedestrian and cyclist with
  a wheel blob for the cyclist, a low ellipse for an animal, a triangle for a cone), painted
  in the class's colour palette. The camera sees shape and colour but not distance, so a
  far truck and a near car can look alike.
* ``lidar`` — range profile ``[2, 64]``: 64 azimuth beams over a 32 degree field of view;
  channel 0 is range / 50 m, channel 1 is return intensity. The object occupies the beams
  its angular width covers (width / d), with a class-specific range profile (rounded car,
  flat truck) and intensity from its reflectivity (cones are retro-reflective). Lidar knows
  distance and physical width, not colour or speed.
* ``radar`` — range-Doppler map of 8 range bins (6 m each) x 8 Doppler bins (2 m/s each),
  flattened to a ``[64]`` vector of log power. The object is a blurred peak at its range
  and radial speed (speed x cos(heading)), with power from its radar cross-section
  (log-normal fluctuation, as Swerling targets do) over an exponential noise floor.
  Radar knows speed and size-ish power, not shape.

Conditions (probabilities in ``CONDITIONS``) and what they do:

* ``clear`` — nominal noise on every sensor.
* ``night`` — the camera image is dark and noisy (colour and most shape lost).
* ``fog`` — camera contrast collapses toward grey; lidar loses many beams and sees
  spurious near returns; radar is unaffected.
* ``rain`` — camera streaks, lidar range noise and dropouts, a raised radar noise floor.
* ``clutter`` — a distractor object in camera and lidar, multipath ghost peaks in radar.

Generation is vectorised numpy: ``load_sensorscenes()`` (9 000 samples) takes about a
second. The same seed gives the same arrays on every machine.
"""

from __future__ import annotations

import numpy as np

from edgefuse.data.dataset import Dataset, Split
from edgefuse.errors import EdgefuseError
from edgefuse.specs import ModalitySpec

CLASS_NAMES = ["car", "truck", "pedestrian", "cyclist", "animal", "cone"]

# width m, height m, speed m/s (mean, sd), radar cross-section (median), lidar reflectivity,
# silhouette (0 box, 1 tall ellipse, 2 tall ellipse + wheel, 3 low ellipse, 4 triangle)
CLASSES = {
    "car": dict(w=1.8, h=1.5, v=(9.0, 4.0), rcs=1.0, refl=0.55, shape=0),
    "truck": dict(w=2.5, h=3.0, v=(8.0, 3.0), rcs=1.8, refl=0.45, shape=0),
    "pedestrian": dict(w=0.55, h=1.7, v=(1.3, 0.5), rcs=0.25, refl=0.30, shape=1),
    "cyclist": dict(w=0.7, h=1.75, v=(4.5, 1.5), rcs=0.45, refl=0.45, shape=2),
    "animal": dict(w=0.9, h=0.8, v=(2.0, 1.5), rcs=0.30, refl=0.20, shape=3),
    "cone": dict(w=0.4, h=0.7, v=(0.0, 0.0), rcs=0.12, refl=0.90, shape=4),
}

# colour palettes (RGB in [0, 1]) per class; a sample picks one entry and jitters it
_PALETTES = {
    "car": [(0.8, 0.1, 0.1), (0.1, 0.2, 0.8), (0.7, 0.7, 0.75), (0.95, 0.95, 0.95)],
    "truck": [(0.8, 0.1, 0.1), (0.1, 0.2, 0.8), (0.7, 0.7, 0.75), (0.95, 0.95, 0.95)],
    "pedestrian": [(0.2, 0.2, 0.3), (0.6, 0.3, 0.5), (0.3, 0.5, 0.3), (0.8, 0.7, 0.3)],
    "cyclist": [(0.2, 0.2, 0.3), (0.6, 0.3, 0.5), (0.3, 0.5, 0.3), (0.8, 0.7, 0.3)],
    "animal": [(0.45, 0.3, 0.15), (0.35, 0.25, 0.15), (0.55, 0.45, 0.3), (0.3, 0.3, 0.3)],
    "cone": [(1.0, 0.45, 0.0), (0.95, 0.55, 0.1), (1.0, 0.35, 0.05), (0.9, 0.5, 0.0)],
}

CONDITIONS = {"clear": 0.35, "night": 0.2, "fog": 0.2, "rain": 0.15, "clutter": 0.1}
CONDITION_NAMES = list(CONDITIONS)

IMG = 16
BEAMS = 64
FOV = np.deg2rad(32.0)
R_MAX = 50.0
RANGE_BINS, DOPPLER_BINS = 8, 8
RANGE_RES, DOPPLER_RES = 6.0, 2.0

DEFAULT_SIZES = {"train": 6000, "val": 1000, "test": 2000}


def specs() -> list[ModalitySpec]:
    """The three SensorScenes modality specs."""
    return [
        ModalitySpec("camera", (3, IMG, IMG), kind="image", rate_hz=30.0, value_range=(0.0, 1.0)),
        ModalitySpec("lidar", (2, BEAMS), kind="signal", rate_hz=10.0, value_range=(0.0, 1.5)),
        ModalitySpec("radar", (RANGE_BINS * DOPPLER_BINS,), kind="vector", rate_hz=20.0, value_range=(0.0, 10.0)),
    ]


def generate(n: int, seed: int = 0) -> Split:
    """Generate ``n`` samples; identical for identical (n, seed)."""
    if n <= 0:
        raise EdgefuseError(f"expected a positive sample count, got {n}")
    rng = np.random.default_rng(seed)
    names = list(CLASSES)
    label = rng.integers(0, len(names), size=n)
    cond = rng.choice(len(CONDITIONS), size=n, p=np.array(list(CONDITIONS.values())))
    attr = {k: np.array([CLASSES[c][k] for c in names]) for k in ("w", "h", "rcs", "refl", "shape")}
    v_mean = np.array([CLASSES[c]["v"][0] for c in names])
    v_sd = np.array([CLASSES[c]["v"][1] for c in names])

    dist = rng.uniform(8.0, 40.0, size=n)
    width = attr["w"][label] * rng.normal(1.0, 0.08, size=n)
    height = attr["h"][label] * rng.normal(1.0, 0.08, size=n)
    speed = np.abs(rng.normal(v_mean[label], v_sd[label]))
    heading = rng.uniform(-np.pi / 3, np.pi / 3, size=n)
    azimuth = rng.uniform(-0.3, 0.3, size=n) * FOV

    camera = _camera(rng, label, cond, dist, width, height, azimuth, attr["shape"][label].astype(int), names)
    lidar = _lidar(rng, label, cond, dist, width, azimuth, attr["refl"][label])
    radar = _radar(rng, cond, dist, speed * np.cos(heading), attr["rcs"][label])
    return Split(
        inputs={"camera": camera, "lidar": lidar, "radar": radar},
        labels=label.astype(np.int64),
        extras={"condition": cond.astype(np.int64), "distance": dist.astype(np.float32)},
    )


def _camera(rng, label, cond, dist, width, height, azimuth, shape, names) -> np.ndarray:
    n = label.shape[0]
    ys, xs = np.meshgrid(np.arange(IMG) + 0.5, np.arange(IMG) + 0.5, indexing="ij")
    # background: sky above the horizon, road below, each with its own tint
    horizon = rng.uniform(6.0, 9.0, size=(n, 1, 1))
    sky = rng.uniform(0.45, 0.75, size=(n, 3, 1, 1))
    road = rng.uniform(0.2, 0.4, size=(n, 1, 1, 1))
    img = np.where(ys[None, None] < horizon[:, None], sky, road) + rng.normal(0, 0.04, size=(n, 3, IMG, IMG))

    focal = 70.0  # pixels per (metre / metre): a car at 10 m is ~12 px wide
    a = np.clip(focal * width / dist / 2, 0.6, 7.5)[:, None, None]  # half-width px
    b = np.clip(focal * height / dist / 2, 0.6, 7.5)[:, None, None]  # half-height px
    cx = (IMG / 2 + azimuth / (FOV / 2) * IMG / 2)[:, None, None]
    base = (horizon[:, 0, 0] + 3.0 + rng.normal(0, 0.5, size=n))[:, None, None]  # object stands on the road
    cy = base - b
    dx, dy = (xs[None] - cx) / a, (ys[None] - cy) / b
    s = shape[:, None, None]
    box = np.maximum(np.abs(dx), np.abs(dy)) <= 1.0
    ell = dx**2 + dy**2 <= 1.0
    wheel = ((xs[None] - cx) ** 2 + (ys[None] - (cy + b * 0.8)) ** 2) <= (a * 1.3) ** 2
    tri = (np.abs(dx) <= (dy + 1.0) / 2.0) & (np.abs(dy) <= 1.0)
    mask = np.select([s == 0, s == 1, s == 2, s == 3, s == 4], [box, ell, ell | wheel, ell, tri])
    pal = np.array([_PALETTES[c] for c in names])  # [classes, 4, 3]
    colour = pal[label, rng.integers(0, 4, size=n)] + rng.normal(0, 0.05, size=(n, 3))
    img = np.where(mask[:, None], colour[:, :, None, None], img)

    noise = np.full(n, 0.05)
    c = np.array(CONDITION_NAMES)[cond]
    night, fog, rain, clutter = (c == "night"), (c == "fog"), (c == "rain"), (c == "clutter")
    img[night] = img[night] * 0.12
    noise[night] = 0.12
    fog_k = rng.uniform(0.75, 0.92, size=int(fog.sum()))[:, None, None, None]
    img[fog] = img[fog] * (1 - fog_k) + 0.6 * fog_k
    streaks = (rng.random(size=(int(rain.sum()), 1, 1, IMG)) < 0.3) * rng.uniform(
        0.2, 0.5, size=(int(rain.sum()), 1, IMG, 1)
    )
    img[rain] = img[rain] + streaks
    noise[rain] = 0.1
    if clutter.any():  # a second, random-coloured distractor blob
        k = int(clutter.sum())
        ox, oy = rng.uniform(2, 14, size=(2, k, 1, 1))
        r = rng.uniform(1.0, 2.5, size=(k, 1, 1))
        blob = (xs[None] - ox) ** 2 + (ys[None] - oy) ** 2 <= r**2
        img[clutter] = np.where(blob[:, None], rng.uniform(0, 1, size=(k, 3, 1, 1)), img[clutter])
    img = img + rng.normal(0, 1, size=img.shape) * noise[:, None, None, None]
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _lidar(rng, label, cond, dist, width, azimuth, refl) -> np.ndarray:
    n = label.shape[0]
    beam = (np.arange(BEAMS) + 0.5) / BEAMS * FOV - FOV / 2  # beam azimuths, rad
    rng_m = np.full((n, BEAMS), R_MAX) + rng.normal(0, 0.3, size=(n, BEAMS))
    inten = np.abs(rng.normal(0.05, 0.03, size=(n, BEAMS)))
    half = np.arctan(width / 2 / dist)[:, None]
    u = (beam[None] - azimuth[:, None]) / np.maximum(half, 1e-6)  # -1..1 across the object
    hit = np.abs(u) <= 1.0
    # class range profile: cars are rounded (edges further away), the rest roughly flat
    curv = np.where(label == 0, 0.6, np.where(label == 4, 0.2, 0.05))[:, None]
    obj_r = dist[:, None] + curv * u**2 + rng.normal(0, 0.08, size=(n, BEAMS))
    obj_i = refl[:, None] * rng.normal(1.0, 0.2, size=(n, BEAMS))
    rng_m = np.where(hit, obj_r, rng_m)
    inten = np.where(hit, obj_i, inten)

    c = np.array(CONDITION_NAMES)[cond]
    fog, rain, clutter = (c == "fog")[:, None], (c == "rain")[:, None], (c == "clutter")
    drop = (fog & (rng.random((n, BEAMS)) < 0.55)) | (rain & (rng.random((n, BEAMS)) < 0.15))
    rng_m = np.where(drop, R_MAX, rng_m)
    inten = np.where(drop, 0.0, np.where(fog, inten * 0.5, inten))
    spurious = fog & (rng.random((n, BEAMS)) < 0.2)
    rng_m = np.where(spurious, rng.uniform(2.0, 6.0, size=(n, BEAMS)), rng_m)
    inten = np.where(spurious, rng.uniform(0.05, 0.3, size=(n, BEAMS)), inten)
    rng_m = rng_m + np.where(rain, rng.normal(0, 0.6, size=(n, BEAMS)), 0.0)
    if clutter.any():  # a second object segment at a random range and width
        k = int(clutter.sum())
        c0 = rng.integers(0, BEAMS, size=(k, 1))
        wdt = rng.integers(2, 10, size=(k, 1))
        seg = np.abs(np.arange(BEAMS)[None] - c0) <= wdt // 2
        rng_m[clutter] = np.where(seg, rng.uniform(5, 45, size=(k, 1)), rng_m[clutter])
        inten[clutter] = np.where(seg, rng.uniform(0.1, 0.9, size=(k, 1)), inten[clutter])
    out = np.stack([np.clip(rng_m, 0, R_MAX) / R_MAX, np.clip(inten, 0, 1.5)], axis=1)
    return out.astype(np.float32)


def _radar(rng, cond, dist, v_radial, rcs) -> np.ndarray:
    n = dist.shape[0]
    c = np.array(CONDITION_NAMES)[cond]
    rb = (np.arange(RANGE_BINS) + 0.5) * RANGE_RES
    db = (np.arange(DOPPLER_BINS) + 0.5) * DOPPLER_RES
    power = rcs * rng.lognormal(0.0, 0.5, size=n) * 10.0
    spread_r = np.exp(-0.5 * ((rb[None] - dist[:, None]) / 3.0) ** 2)
    spread_d = np.exp(-0.5 * ((db[None] - np.clip(v_radial, 0, 16)[:, None]) / 1.2) ** 2)
    rd = power[:, None, None] * spread_r[:, :, None] * spread_d[:, None, :]
    floor = np.where(c == "rain", 0.6, 0.3)[:, None, None]
    rd = rd + rng.exponential(1.0, size=rd.shape) * floor
    clutter = c == "clutter"
    if clutter.any():  # multipath ghosts: 2 strong spurious peaks
        k = int(clutter.sum())
        for _ in range(2):
            gi, gj = rng.integers(0, RANGE_BINS, size=k), rng.integers(0, DOPPLER_BINS, size=k)
            ghost = np.zeros((k, RANGE_BINS, DOPPLER_BINS))
            ghost[np.arange(k), gi, gj] = rng.uniform(3.0, 15.0, size=k)
            rd[clutter] += ghost
    return np.log1p(rd).reshape(n, -1).astype(np.float32)


def load_sensorscenes(seed: int = 0, sizes: dict[str, int] | None = None) -> Dataset:
    """SensorScenes with train/val/test splits (default 6000/1000/2000), each from its own seed."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise EdgefuseError(f"unknown split {sorted(unknown)}; expected some of {list(DEFAULT_SIZES)}")
    splits = {name: generate(n, seed=seed * 1000 + i) for i, (name, n) in enumerate(sizes.items())}
    return Dataset(
        specs=specs(),
        splits=splits,
        class_names=list(CLASS_NAMES),
        name="sensorscenes",
        description=f"SensorScenes seed={seed} sizes={sizes}",
    )
