"""kombu's filesystem transport, with each message written whole before a worker can see it.

kombu creates the message file and then writes it; a worker polling the folder may move and
read it in between, find it empty and die on the JSON (seen in ``make demo`` under load). Here
the message is written under a name no reader takes, then renamed into place: a rename is
atomic, so a reader sees all of a message or none of it.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: the reader takes only names of the form "<stamp>.<queue>.msg".
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        with open(partial, "wb") as out:
            out.write(str_to_bytes(dumps(payload)))
        os.replace(partial, final)


class Transport(filesystem.Transport):
    Channel = Channel
