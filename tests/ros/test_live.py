"""edgefuse run --foxglove: a loopback WebSocket client, speaking Foxglove's protocol, receives a health
status and a result for every inference, and the swap and health events."""

import json
import struct
import time

import numpy as np
import pytest

pytest.importorskip("foxglove", reason="the live view needs foxglove-sdk (pip install 'edgefuse[live]')")
ws_client = pytest.importorskip("websockets.sync.client", reason="the loopback client needs websockets")

from edgefuse.live import FoxgloveView  # noqa: E402
from edgefuse.runtime import ManualClock, Runtime  # noqa: E402


def _recv(ws, timeout):
    try:
        return ws.recv(timeout=timeout)
    except TimeoutError:
        return None


def test_a_loopback_client_gets_a_status_message_per_inference(tiny_bundle, small_scenes):
    test = small_scenes["test"]
    clock = ManualClock(0.0)
    with Runtime.from_bundle(tiny_bundle, clock=clock, threads=1) as rt:
        view = FoxgloveView(rt, port=0)
        try:
            with ws_client.connect(
                f"ws://127.0.0.1:{view.port}", subprotocols=["foxglove.sdk.v1"], open_timeout=10
            ) as ws:
                channels, deadline = {}, time.monotonic() + 10
                while len(channels) < 3 and time.monotonic() < deadline:
                    msg = _recv(ws, 1.0)
                    if isinstance(msg, str) and json.loads(msg)["op"] == "advertise":
                        channels.update({c["topic"]: c for c in json.loads(msg)["channels"]})
                assert {"/edgefuse/result", "/edgefuse/health", "/edgefuse/events"} <= set(channels)
                subs = {i + 1: t for i, t in enumerate(("/edgefuse/result", "/edgefuse/health", "/edgefuse/events"))}
                ws.send(
                    json.dumps(
                        {
                            "op": "subscribe",
                            "subscriptions": [{"id": i, "channelId": channels[t]["id"]} for i, t in subs.items()],
                        }
                    )
                )
                got: dict[str, list] = {t: [] for t in subs.values()}

                def step(i, drop_radar=False):
                    clock.advance(0.05)
                    for n in rt.names:
                        frame = test.inputs[n][i % len(test.labels)]
                        rt.push(n, np.full_like(frame, np.nan) if drop_radar and n == "radar" else frame)
                    view.on_result(rt.infer())

                def drain(timeout):
                    while (m := _recv(ws, timeout)) is not None:
                        if (
                            isinstance(m, bytes) and m[0] == 1
                        ):  # messageData: opcode, subscription id, log time, payload
                            sub, _ns = struct.unpack_from("<IQ", m, 1)
                            got[subs[sub]].append(json.loads(m[13:]))

                deadline = time.monotonic() + 10  # the subscription takes effect asynchronously
                k = 0
                while not got["/edgefuse/health"] and time.monotonic() < deadline:
                    step(k)
                    k += 1
                    drain(0.05)
                assert got["/edgefuse/health"], "no message reached the client"
                before = {t: len(v) for t, v in got.items()}
                n = 20
                for i in range(n):
                    step(k + i, drop_radar=i >= 10)
                drain(1.0)
                assert len(got["/edgefuse/health"]) - before["/edgefuse/health"] >= n
                assert len(got["/edgefuse/result"]) - before["/edgefuse/result"] >= n
                last = got["/edgefuse/health"][-1]
                assert last["sensors"]["radar"]["state"] == "DROPPED" and "radar" not in last["live"]
                kinds = {e["kind"] for e in got["/edgefuse/events"]}
                assert {"state", "swap"} <= kinds
                assert got["/edgefuse/result"][-1]["engine"] == "camera+lidar"
        finally:
            view.close()
