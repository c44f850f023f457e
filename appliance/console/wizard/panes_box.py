"""Wizard panes for the box itself: site and identity, network, time, the first admin."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static

from appliance.console.messages import SessionOpened
from appliance.console.wizard.base import StepPane
from appliance.errors import AccountError, ConfigError
from appliance.identity.roles import Principal
from appliance.setup import clock, network
from appliance.setup.progress import Step


def _buttons(*buttons: Button) -> Horizontal:
    return Horizontal(*buttons, classes="buttons")


class SitePane(StepPane):
    step = Step.SITE

    def compose(self) -> ComposeResult:
        known = self.prov.site()
        yield Static("Which clinic is this box for, and what is its name on the network?")
        yield Input(known.site if known else "", placeholder="site (clinic) name", id="site")
        box_id = known.box_id if known else self.prov.config.box_id
        yield Label("box id (its host name in audit exports and health reports):")
        yield Input(box_id, placeholder="box id, e.g. clinic-a-box1", id="box-id")
        yield _buttons(Button("Save and continue", variant="primary", id="next"))
        yield self.error_line()

    def on_mount(self) -> None:
        self.query_one("#site", Input).focus()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        def save() -> None:
            saved = self.prov.save_site(self.value("#site"), self.value("#box-id"))
            self.done(f"{saved.site} / {saved.box_id}")

        self.attempt(save)


class NetworkPane(StepPane):
    step = Step.NETWORK

    def compose(self) -> ComposeResult:
        yield Static("How does the box get its address? (written for systemd-networkd)")
        with RadioSet(id="mode"):
            yield RadioButton("DHCP", value=True, id="dhcp")
            yield RadioButton("Static address", id="static")
        yield Label("interface (name or pattern):")
        yield Input("en*", placeholder="interface name or pattern", id="interface")
        yield Input(placeholder="address with prefix, e.g. 192.168.10.20/24", id="address")
        yield Input(placeholder="gateway, e.g. 192.168.10.1", id="gateway")
        yield Input(placeholder="DNS servers, comma separated", id="dns")
        yield _buttons(Button("Save and continue", variant="primary", id="next"))
        yield self.error_line()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        def save() -> None:
            iface = self.value("#interface")
            if self.query_one("#static", RadioButton).value:
                settings = network.static(
                    self.value("#address"), self.value("#gateway"), self.value("#dns"), iface
                )
            else:
                settings = network.dhcp(iface)
            self.prov.write_network(settings)
            self.done(settings.describe())

        self.attempt(save)


class TimePane(StepPane):
    step = Step.TIME

    def compose(self) -> ComposeResult:
        yield Static("Time zone (zoneinfo name) and the clock.")
        yield Label("time zone:")
        yield Input(self.prov.timezone(), placeholder="e.g. Europe/Berlin", id="tz")
        yield Static("", id="clock")
        can = self.prov.set_clock is not None
        yield Input(
            placeholder="set the clock: YYYY-MM-DD HH:MM (empty: leave it)" if can else
            "setting the clock is possible only on the box itself", id="set-clock",
            disabled=not can,
        )  # fmt: skip
        yield _buttons(Button("Save and continue", variant="primary", id="next"))
        yield self.error_line()

    def on_mount(self) -> None:
        self.tick()
        self.set_interval(1.0, self.tick)

    def tick(self) -> None:
        try:
            zone = ZoneInfo(clock.check_timezone(self.value("#tz")))
        except (ConfigError, ValueError):
            zone = ZoneInfo("UTC")
        now = datetime.now(zone)
        self.query_one("#clock", Static).update(f"the box's clock: {now:%Y-%m-%d %H:%M:%S %Z}")

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        def save() -> None:
            zone = clock.check_timezone(self.value("#tz"))
            wanted = self.value("#set-clock").strip()
            when = clock.parse_clock(wanted) if wanted else None
            self.prov.save_timezone(zone)
            if when is not None and self.prov.set_clock is not None:
                self.prov.set_time(when)
            self.done(zone + (f", clock set to {when:%Y-%m-%d %H:%M}" if when else ""))

        self.attempt(save)


class AdminPane(StepPane):
    step = Step.ADMIN

    def compose(self) -> ComposeResult:
        yield Static("The first admin account (clinic IT). There is no default account.")
        yield Input(placeholder="user name", id="admin-user")
        yield Input(placeholder="password (a long passphrase)", password=True, id="admin-pw")
        yield Input(placeholder="the password again", password=True, id="admin-pw2")
        yield _buttons(Button("Create the admin", variant="primary", id="next"))
        yield self.error_line()

    def on_mount(self) -> None:
        if self.wizard.principal is not None:  # created before a power cut: logged in again
            self.done(f"{self.wizard.principal.username} (existed)")
        else:
            self.query_one("#admin-user", Input).focus()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        user, password = self.value("#admin-user").strip(), self.value("#admin-pw")
        if password != self.value("#admin-pw2"):
            self.fail("the two passwords differ.", "Type the same password twice.")
            return
        if not user:
            self.fail("no user name given.", "Give the admin a personal name, e.g. j.doe.")
            return
        self.query_one("#next", Button).disabled = True
        self.run("admin", lambda: self.prov.create_admin(user, password))

    def finished(self, tag: str, result: object) -> None:
        if not isinstance(result, Principal):
            raise AccountError("the admin account was not created.")
        self.post_message(SessionOpened(result))
        self.done(result.username)

    def fail(self, message: str, hint: str = "") -> None:
        super().fail(message, hint)
        self.query_one("#next", Button).disabled = False
