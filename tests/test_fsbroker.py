"""The demo's filesystem broker: a worker never sees a message before it is written whole."""

import os
from queue import Empty
from typing import Any
from unittest import mock

import pytest
from kombu import Connection


def test_a_message_is_invisible_until_written_whole_then_delivered(tmp_path):
    folder = str(tmp_path)
    options = {"data_folder_in": folder, "data_folder_out": folder, "store_processed": False}
    with Connection(
        "filesystem://", transport="testproject.fsbroker:Transport", transport_options=options
    ) as connection:
        channel: Any = connection.default_channel  # a filesystem Channel
        seen_before_rename = []
        real_replace = os.replace

        def replace(source, target):
            # The moment before the message appears: a reader polling now finds nothing.
            with pytest.raises(Empty):
                channel._get("demo")
            seen_before_rename.extend(os.listdir(tmp_path))
            real_replace(source, target)

        with mock.patch("os.replace", replace):
            channel._put("demo", {"body": "x" * 10_000})
        assert len(seen_before_rename) == 1 and seen_before_rename[0].endswith(".part")
        assert channel._get("demo") == {"body": "x" * 10_000}
