"""`appliance login`, `logout` and `users ...`."""

from __future__ import annotations

import argparse
import sys
import time

from appliance.cli.common import command, load_session, read_secret, save_session, session_file
from appliance.errors import AccountError
from appliance.identity.roles import Principal, Role
from appliance.runtime import Runtime


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _me(who: Principal | None) -> Principal:
    if who is None:  # the dispatcher authenticates these entry points
        raise AccountError("this command needs a logged-in user.", "Run `appliance login`.")
    return who


def cmd_login(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    password = read_secret(f"password for {args.user}: ", args.password_file)
    principal, issued = rt.identity.login(args.user, password, reason=args.reason)
    path = save_session(rt.config, issued.token)
    print(f"logged in as {principal.username} ({principal.role}) until {_when(issued.expires)}; "
          f"logged off after {rt.config.session_idle_minutes} min idle")  # fmt: skip
    if principal.break_glass:
        print("BREAK-GLASS session: every action is flagged for an admin's review.")
    print(f"session saved in {path}")
    return 0


def cmd_logout(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    token = load_session(rt.config)
    if token:
        try:
            rt.identity.logout(rt.identity.authenticate(token))
        finally:
            session_file(rt.config).unlink(missing_ok=True)
    print("logged out")
    return 0


def cmd_bootstrap(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    password = read_secret(f"new password for {args.user}: ", args.password_file)
    rt.identity.bootstrap_admin(args.user, password)
    print(f"first admin '{args.user}' created; log in with `appliance login --user {args.user}`")
    return 0


def cmd_list(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    now = time.time()
    for a in rt.identity.accounts():
        state = "disabled" if a.disabled else ("LOCKED" if a.locked_until > now else "active")
        print(f"{a.username:<24} {a.role:<12} {state}")
    return 0


def cmd_add(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    role = Role(args.role)
    password = None
    if role is not Role.SERVICE:
        password = read_secret(f"new password for {args.user}: ", args.password_file)
    rt.identity.add_account(_me(who), args.user, role, password)
    print(f"account '{args.user}' ({role}) created")
    return 0


def cmd_disable(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    rt.identity.disable(_me(who), args.user)
    print(f"account '{args.user}' disabled; its sessions and tokens are revoked")
    return 0


def cmd_enable(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    rt.identity.enable(_me(who), args.user)
    print(f"account '{args.user}' enabled; its user logs in afresh (old sessions stay revoked)")
    return 0


def cmd_password(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    me = _me(who)
    password = read_secret(f"new password for {args.user}: ", args.password_file)
    rt.identity.set_password(me, args.user, password)
    print(f"password of '{args.user}' reset; its sessions are ended and any lockout lifted")
    return 0


def cmd_passwd(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    me = _me(who)
    current = read_secret("current password: ", args.current_file, option="--current-file")
    new = read_secret("new password: ", args.new_file, what="new password", option="--new-file")
    if args.new_file is None and sys.stdin is not None and sys.stdin.isatty():
        again = read_secret("new password again: ")
        if again != new:
            raise AccountError("the two new passwords differ; nothing changed.", "Run it again.")
    rt.identity.change_password(me, current, new)
    print(f"password of '{me.username}' changed; your other sessions are ended")
    return 0


def cmd_unlock(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    rt.identity.unlock(_me(who), args.user)
    print(f"account '{args.user}' unlocked")
    return 0


def cmd_token(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    issued = rt.identity.issue_service_token(_me(who), args.user)
    print(f"token {issued.token_id} for '{args.user}', valid until {_when(issued.expires)}.")
    print("Shown ONCE; configure it in the integration now:")
    print(f"    {issued.token}")
    return 0


def cmd_revoke(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    rt.identity.revoke(_me(who), args.token_id)
    print(f"token {args.token_id} revoked")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    login = command(sub, "login", "log in; the session is kept for later commands", cmd_login,
                    "login")  # fmt: skip
    login.add_argument("--user", required=True, help="the account name")
    login.add_argument("--password-file", help="read the password from this file")
    login.add_argument("--reason", help="why (required for a break-glass account)")
    command(sub, "logout", "end the saved session", cmd_logout, "logout")
    passwd = command(sub, "passwd", "change your own password (the current one is asked)",
                     cmd_passwd, "passwd")  # fmt: skip
    passwd.add_argument("--current-file", help="read the current password from this file")
    passwd.add_argument("--new-file", help="read the new password from this file")

    what = "accounts, roles, service tokens"
    users = sub.add_parser("users", help=what, description=what)
    usub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    boot = command(usub, "bootstrap-admin", "create the first admin (provisioning only)",
                   cmd_bootstrap, "users bootstrap-admin")  # fmt: skip
    command(usub, "list", "list accounts", cmd_list, "users list")
    add = command(usub, "add", "create an account", cmd_add, "users add")
    add.add_argument("--role", required=True, choices=[r.value for r in Role],
                     help="what the account may do; a service account has no password and "
                     "gets tokens from `users token`")  # fmt: skip
    for parser in (boot, add):
        parser.add_argument("user", help="the new account's name")
        parser.add_argument("--password-file", help="read the password from this file")
    for name, func, help_ in (
        ("disable", cmd_disable, "disable an account and revoke its sessions"),
        ("enable", cmd_enable, "enable a disabled account again"),
        ("unlock", cmd_unlock, "unlock an account locked by failed logins"),
        ("token", cmd_token, "issue a bearer token for a service account"),
    ):
        command(usub, name, help_, func, f"users {name}").add_argument(
            "user", help="the account name (see `appliance users list`)"
        )
    password = command(usub, "password", "reset an account's password (its sessions end)",
                       cmd_password, "users password")  # fmt: skip
    password.add_argument("user", help="the account name (see `appliance users list`)")
    password.add_argument("--password-file", help="read the new password from this file")
    command(usub, "revoke", "revoke a token", cmd_revoke, "users revoke").add_argument(
        "token_id", help="the token id `appliance users token` printed"
    )
