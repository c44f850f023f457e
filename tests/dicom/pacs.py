"""A fake PACS: a real pynetdicom SCP on an ephemeral port that keeps what it is sent in memory,
for tests of the outbox."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt

SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7"


@dataclass
class FakePacs:
    """A real SCP that stores what it receives in memory; ``refuse`` makes it answer 0xA700."""

    port: int = 0
    received: list[Dataset] = field(default_factory=list)
    calls: int = 0
    refuse: bool = False
    server: Any = None

    def handle(self, event: Any) -> int:
        self.calls += 1
        if self.refuse:
            return 0xA700
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append(ds)
        return 0x0000

    def start(self, port: int = 0) -> FakePacs:
        ae = AE(ae_title="PACS")
        for sop_class in (SR_CLASS, SC_CLASS):
            ae.add_supported_context(sop_class)
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.handle)])  # fmt: skip
        self.port = self.server.server_address[1]
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
