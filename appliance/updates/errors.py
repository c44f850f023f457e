"""Errors of the update channel: bundle format, signatures, freshness, integrity, compatibility.

All derive from :class:`UpdateError`, itself an :class:`appliance.errors.ApplianceError`, so the
CLI prints the message and its hint and exits non-zero. Exceptions from tarfile, gzip and
python-tuf are wrapped into these once, where they enter (``bundle.py`` and ``verify.py``).
"""

from __future__ import annotations

from appliance.errors import ApplianceError

# The hint for every refusal that means "this bundle was tampered with or damaged".
DO_NOT_INSTALL = (
    "Do not install this bundle: it was damaged in transit or tampered with. "
    "Ask the vendor for a fresh copy and check its SHA-256 against the one the vendor published."
)


class TransitionError(ApplianceError):
    """A bug guard: the update agent tried a transition its table does not allow."""


class UpdateError(ApplianceError):
    """Base of every refusal of the update channel."""


class BundleFormatError(UpdateError):
    """The file is not a bundle: not a (gzip'ed) tar, members missing, doubled or out of order."""


class UnsafeMemberError(BundleFormatError):
    """A tar member is a link, device, FIFO or folder, or its name is absolute or climbs out."""


class BundleSizeError(BundleFormatError):
    """The bundle holds more bytes than its signed metadata allows (oversized, endless, bomb)."""


class MetadataError(UpdateError):
    """TUF metadata is malformed or inconsistent (for example mixed from different bundles)."""


class MetadataExpiredError(MetadataError):
    """Metadata expired before the newest signed not-before this box has seen."""


class SignatureError(UpdateError):
    """Metadata lacks the threshold of valid signatures from keys its delegator trusts."""


class RollbackError(UpdateError):
    """The bundle is not newer than the anti-rollback floor or the box's trusted metadata."""


class TargetIntegrityError(UpdateError):
    """A target file's length or hash differs from the signed targets metadata."""


class ManifestError(UpdateError):
    """The model manifest (or the model folder it describes) is missing or invalid."""


class IncompatibleBundleError(UpdateError):
    """The model needs a newer OpenVINO or device kinds this box does not have."""


class TrustedStateError(UpdateError):
    """The box's trusted metadata folder is missing or unreadable."""


class CommitPendingError(UpdateError):
    """A validated update's commit could not finish (the TPM did not answer); it is finished, not
    undone, the next time the agent starts, and no other update installs before it is."""


class VendorRepoError(UpdateError):
    """The vendor repository folder or a signing key cannot be used as asked (vendor side)."""
