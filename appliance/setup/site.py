"""The site and box identity: who owns the box and the name it reports (audit, health report)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from appliance.config import Config
from appliance.errors import ConfigError
from appliance.fsutil import atomic_write

_BOX_ID = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class SiteIdentity:
    site: str  # the clinic, as the vendor's support knows it
    box_id: str  # a host name: it names the box in audit exports and health reports

    def __post_init__(self) -> None:
        if not 1 <= len(self.site.strip()) <= 120:  # noqa: PLR2004
            raise ConfigError("the site name is empty or too long.", "Give 1 to 120 characters.")
        if not _BOX_ID.match(self.box_id):
            raise ConfigError(
                f"box id {self.box_id!r} is not usable as a host name.",
                "Use letters, digits, dots and dashes, e.g. clinic-a-box1.",
            )


def save_site(config: Config, identity: SiteIdentity) -> None:
    config.provisioning_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps(asdict(identity), indent=2).encode() + b"\n"
    atomic_write(config.provisioning_dir / "site.json", data, mode=0o644)


def box_name(config: Config) -> str:
    """The box's host name: the wizard's box id once saved, until then the configured one.

    It names the box in audit exports, health reports and the API's site certificate."""
    saved = load_site(config)
    return saved.box_id if saved is not None else config.box_id


def load_site(config: Config) -> SiteIdentity | None:
    try:
        return SiteIdentity(**json.loads((config.provisioning_dir / "site.json").read_bytes()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"the site identity file is damaged ({exc}).", "Enter it again in the wizard."
        ) from exc
