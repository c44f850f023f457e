"""What the update agent tells the technician when a bundle does not go live, in one place.

Each FAILURE reason (kept in ``agent.json``, audited, shown by the CLI and the console) and the
error for a commit left pending says what happened, what the box runs now, and what to do.
"""

from __future__ import annotations

from appliance.errors import ApplianceError, ModelIntegrityError, TrustError
from appliance.updates.errors import CommitPendingError

NOT_VALIDATED = (
    "The model did not pass this box's validation gate and is not put in use; the version in "
    "use, if any, stays live. Give the vendor this message and the health report (`appliance "
    "health report`, or `h` on the console)."
)
TPM_RETRY = (
    "The bundle is not at fault, and the box still runs the version it ran: insert the stick "
    "again once the TPM answers (`appliance trust status` says whether it does)."
)


def not_validated(result: str) -> str:
    """The reason for a model below the vendor's expected metric, ``result`` the gate's."""
    return f"{result}. {NOT_VALIDATED}"


def not_installed(exc: ApplianceError) -> str:
    """The reason for a fault of the box, not of the bundle, before COMMIT: a disk that cannot
    take the slot, or a trust core that does not answer (TPM, sealed model key)."""
    tpm = isinstance(exc, TrustError) and not isinstance(exc, ModelIntegrityError)
    return f"not installed: {exc}{' ' + TPM_RETRY if tpm else ''}"


def interrupted(phase: str) -> str:
    """The reason for an update a power cut or crash stopped before COMMIT (undone at resume)."""
    return (
        f"interrupted during {phase} (power cut or crash); the box still runs the previous "
        "model. Insert the stick again to retry."
    )


def unrecorded(reason: str, exc: ApplianceError) -> str:
    """``reason`` for a refusal that stands but that the audit trail could not record."""
    return (
        f"{reason} (This refusal is not in the audit trail, which could not record it: "
        f"{exc.message} The system journal holds it.)"
    )


def commit_pending(update: str, live: bool, exc: TrustError) -> CommitPendingError:
    """The error for the commit of ``update`` ("model version") that the TPM stopped; ``live``
    says whether its slot switch was done. A validated update is finished, never undone."""
    now = f"{update} is live" if live else "the box still runs what it ran before"
    return CommitPendingError(
        f"{update} passed validation but its commit did not finish: {exc.message}",
        f"Nothing is lost: {now}. {exc.hint + ' ' if exc.hint else ''}Once the TPM answers, "
        "`appliance update status` finishes the commit (so does the next install, before its "
        "own bundle); no other update installs until then.",
    )
