"""ROS 2 for the runtime: converters from messages to frames, bag replay and recording, a node.

Nothing here needs a ROS install: bags are read and written with ``rosbags`` (``pip install
'edgefuse[ros]'``), and the node (``edgefuse.ros.node``) takes ``rclpy`` when ROS 2 provides it.
See ``docs/ros.md``.
"""

from edgefuse.ros.convert import Context, ConversionError, converter, converters, get_converter

__all__ = ["ConversionError", "Context", "converter", "converters", "get_converter"]
