"""The update agent's TargetSink: each target encrypted into the model's inactive slot as it is
read, while ``verify_bundle`` hashes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.store.slots import SlotName, SlotWriter
from appliance.updates.bundle import Writer
from appliance.updates.errors import TransitionError

if TYPE_CHECKING:  # the agent imports this module; its state type is only named here
    from appliance.updates.agent import AgentState


class SlotSink:
    """Streams a bundle's targets into the model's inactive slot.

    The first target starts it: its signed path (``<name>/<version>/<file>``, one folder per
    bundle) names the model, and ``start`` records model and slot and clears the slot. The bytes
    are not verified yet; the slot stays unfinished until INSTALL completes it.
    """

    def __init__(
        self,
        state: AgentState,
        start: Callable[[AgentState, str, str], tuple[AgentState, SlotWriter]],
    ) -> None:
        self.state = state
        self.writer: SlotWriter | None = None
        self._start = start

    @property
    def slot(self) -> SlotName:
        if self.state.slot is None:
            raise TransitionError("update agent: no slot was written.")
        return self.state.slot

    def open(self, path: str, length: int) -> Writer:
        name, version, rel = path.split("/", 2)
        if self.writer is None:
            self.state, self.writer = self._start(self.state, name, version)
        elif (name, version) != (self.writer.name, self.writer.version):  # verify's layout check
            raise TransitionError(f"update agent: target {path} is outside the model folder.")
        return self.writer.open(rel, length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
