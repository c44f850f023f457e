"""The ``appliance`` command: the one entry point that builds the Config and exits the process."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from appliance import __version__
from appliance.config import Config, load_config
from appliance.errors import ApplianceError, ConfigError
from appliance.logs import setup_logging
from appliance.trust import aead, core
from appliance.trust.connection import tpm_endpoint
from appliance.trust.counter import RollbackCounter
from appliance.trust.keys import KeyName
from appliance.trust.policy import DIGEST_SIZE, predict_extend
from appliance.trust.tpm import Tpm, open_tpm

Handler = Callable[[argparse.Namespace, Config], int]

EPILOG = """\
examples:
  appliance run                         start the appliance (a software TPM if there is none)
  appliance trust status                TPM, lockout, keys and PCRs, anti-rollback floor
  appliance trust recover               re-seal the keys after a PCR change (asks for the code)
  appliance trust plan-pcr-change --extend 7=<sha256>   before a planned firmware update

configuration: /etc/appliance/appliance.toml, APPLIANCE_* variables, then these flags.
"""


def _with_tpm(args: argparse.Namespace, config: Config, body: Callable[[Tpm], int]) -> int:
    with tpm_endpoint(config) as endpoint, open_tpm(endpoint.tcti) as tpm:
        if args.verbose:
            print(f"TPM: {endpoint.description}", file=sys.stderr)
        return body(tpm)


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from appliance import supervisor

    return supervisor.run(config, sys.stdout)


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    def body(tpm: Tpm) -> int:
        st = core.state(tpm, config)
        lock = st.lockout
        print(f"TPM lockout:     {'LOCKED OUT' if lock.in_lockout else 'no'} "
              f"({lock.failed_tries}/{lock.max_tries} failures, "
              f"recovery {lock.recovery_s} s per failure)")  # fmt: skip
        print(f"enrolled:        {'yes' if st.enrolled else 'no (run `appliance trust enroll`)'}")
        for key in st.keys:
            verdict = "unseals" if key.unsealable else (
                f"WILL NOT UNSEAL: PCR {', '.join(map(str, key.differing))} changed; "
                "run `appliance trust recover`"
            )  # fmt: skip
            print(f"key {key.name:<12} sealed to PCRs {','.join(map(str, key.sealed_pcrs))}: "
                  f"{verdict}")  # fmt: skip
        floor = "not defined" if st.floor is None else str(st.floor)
        print(f"rollback floor:  {floor}")
        return 0 if st.enrolled and all(k.unsealable for k in st.keys) else 1

    return _with_tpm(args, config, body)


def cmd_enroll(args: argparse.Namespace, config: Config) -> int:
    def body(tpm: Tpm) -> int:
        code = core.enroll(tpm, config)
        print("Keys sealed to PCRs " + ",".join(map(str, config.pcrs)) + ".")
        print("Recovery code (shown ONCE; write it down and keep it off the box):")
        print(f"    {code}")
        return 0

    return _with_tpm(args, config, body)


def _read_code(args: argparse.Namespace) -> str:
    if args.code_file:
        return Path(args.code_file).read_text().strip()
    if sys.stdin.isatty():
        return getpass.getpass("recovery code: ")
    return sys.stdin.readline().strip()


def _pcr_assignments(items: Sequence[str], what: str) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for item in items:
        pcr, sep, value = item.partition("=")
        try:
            digest, index = bytes.fromhex(value), int(pcr)
        except ValueError:
            digest, index = b"", -1
        if not sep or len(digest) != DIGEST_SIZE or index < 0:
            raise ConfigError(
                f"--{what} '{item}' is not PCR=SHA256.", "Write it as 7=<64 hex digits>."
            )
        out[index] = digest
    return out


def cmd_recover(args: argparse.Namespace, config: Config) -> int:
    code = _read_code(args)
    predicted = _pcr_assignments(args.value, "value")

    def body(tpm: Tpm) -> int:
        core.key_store(config).recover(tpm, code, predicted)
        print(
            "Keys re-sealed to the current PCRs"
            + (" (with predicted values)" if predicted else "")
            + "."
        )
        return 0

    return _with_tpm(args, config, body)


def cmd_plan(args: argparse.Namespace, config: Config) -> int:
    values = _pcr_assignments(args.value, "value")
    extends = _pcr_assignments(args.extend, "extend")

    def body(tpm: Tpm) -> int:
        current = tpm.pcr_read(config.pcrs)
        predicted = dict(values)
        for pcr, measurement in extends.items():
            predicted[pcr] = predict_extend(
                predicted.get(pcr, current.get(pcr, b"")), [measurement]
            )
        if not predicted:
            raise ConfigError("no predicted PCR value given.", "Use --value or --extend.")
        core.key_store(config).plan_pcr_change(tpm, predicted)
        for pcr, value in sorted(predicted.items()):
            print(f"keys also sealed to PCR {pcr} = {value.hex()}")
        return 0

    return _with_tpm(args, config, body)


def cmd_counter(args: argparse.Namespace, config: Config) -> int:
    def body(tpm: Tpm) -> int:
        counter = RollbackCounter(tpm, config.counter_index)
        value = counter.read() if args.advance_to is None else counter.advance_to(args.advance_to)
        print(value)
        return 0

    return _with_tpm(args, config, body)


def cmd_model(args: argparse.Namespace, config: Config) -> int:
    def body(tpm: Tpm) -> int:
        key = core.key_store(config).unseal(tpm, KeyName.MODEL_STORE)
        if args.action == "encrypt":
            aead.encrypt_file(
                key, Path(args.src), Path(args.dst), model=args.name, version=args.version
            )
            print(f"encrypted {args.src} -> {args.dst}")
        else:
            size = len(
                aead.decrypt_file(key, Path(args.src), model=args.name, version=args.version)
            )
            print(f"{args.src}: intact, {size} bytes of model {args.name} {args.version}")
        return 0

    return _with_tpm(args, config, body)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="appliance",
        description="The clinical AI appliance: local inference, TPM-sealed keys, offline updates.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"appliance {__version__}")
    p.add_argument(
        "--config", type=Path, help="TOML settings file (default /etc/appliance/appliance.toml)"
    )
    p.add_argument("--state-dir", help="where the box keeps its state (default /var/lib/appliance)")
    p.add_argument(
        "--tcti", help="TPM connection, e.g. device:/dev/tpmrm0 or swtpm:path=/run/tpm.sock"
    )
    p.add_argument("--pcrs", help="PCRs the keys are sealed to (default 7,11)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("run", help="start the appliance and keep it running").set_defaults(func=cmd_run)

    trust = sub.add_parser("trust", help="TPM, sealed keys, recovery").add_subparsers(
        dest="trust_command", metavar="ACTION", required=True
    )
    trust.add_parser("status", help="lockout, enrollment, PCR match, floor").set_defaults(
        func=cmd_status
    )
    trust.add_parser("enroll", help="seal new keys and show the recovery code once").set_defaults(
        func=cmd_enroll
    )
    rec = trust.add_parser(
        "recover", help="re-seal the keys to the current PCRs with the recovery code"
    )
    rec.add_argument("--code-file", help="read the code from this file instead of the terminal")
    rec.add_argument("--value", action="append", default=[], metavar="PCR=SHA256",
                     help="seal to this value instead of the current one (repeatable)")  # fmt: skip
    rec.set_defaults(func=cmd_recover)
    plan = trust.add_parser("plan-pcr-change", help="also seal the keys to PCR values predicted "
                            "for after a planned firmware change")  # fmt: skip
    plan.add_argument("--value", action="append", default=[], metavar="PCR=SHA256",
                      help="the PCR's predicted final value (repeatable)")  # fmt: skip
    plan.add_argument("--extend", action="append", default=[], metavar="PCR=SHA256",
                      help="a measurement to be extended into the PCR (repeatable)")  # fmt: skip
    plan.set_defaults(func=cmd_plan)
    ctr = trust.add_parser("counter", help="read or advance the anti-rollback floor")
    ctr.add_argument("--advance-to", type=int, metavar="N", help="raise the floor to N")
    ctr.set_defaults(func=cmd_counter)

    model = sub.add_parser("model", help="encrypt a model for the store or check an encrypted one")
    model.add_argument("action", choices=["encrypt", "verify"])
    model.add_argument("src", help="plaintext model (encrypt) or encrypted model (verify)")
    model.add_argument("dst", nargs="?", help="encrypted output (encrypt only)")
    model.add_argument("--name", required=True, help="model name, bound into the encryption")
    model.add_argument("--version", required=True, help="model version, bound into the encryption")
    model.set_defaults(func=cmd_model)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command, print errors with what to do; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(
            args.config,
            overrides={"state_dir": args.state_dir, "tcti": args.tcti, "pcrs": args.pcrs},
        )
        setup_logging("DEBUG" if args.verbose else config.log_level, stderr=args.command != "run")
        if getattr(args, "action", None) == "encrypt" and not args.dst:
            parser.error("model encrypt needs SRC and DST")
        func: Handler = args.func
        return func(args, config)
    except ApplianceError as exc:
        print(f"appliance: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"appliance: what to do: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
