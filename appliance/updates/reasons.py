"""What the update agent tells the technician when a bundle does not go live, in one place.

Each FAILURE reason (kept in ``agent.json``, audited, shown by the CLI and the console) says
what happened, what the box runs now, and what to do.
"""

from __future__ import annotations

from appliance.errors import ApplianceError, ModelIntegrityError, TrustError

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
