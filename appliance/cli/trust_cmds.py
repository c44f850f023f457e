"""`appliance trust ...` and `appliance model ...`."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.audit.records import AuditEvent, Outcome
from appliance.cli.common import command, pcr_assignments, read_secret
from appliance.errors import ConfigError
from appliance.identity.roles import Principal
from appliance.runtime import Runtime
from appliance.trust import aead, core
from appliance.trust.counter import RollbackCounter
from appliance.trust.keys import KeyName
from appliance.trust.policy import predict_extend
from appliance.trust.tpm import open_tpm


def _audit_trust(rt: Runtime, who: Principal | None, action: str, **detail: str | int) -> None:
    rt.audit.append(
        AuditEvent.TRUST_CHANGE,
        actor=who.username if who else ("recovery-code" if action == "recover" else "provisioning"),
        role=who.role.value if who else None,
        outcome=Outcome.SUCCESS,
        detail={"action": action, **detail},
    )


def cmd_status(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    with open_tpm(rt.tcti) as tpm:
        st = core.state(tpm, rt.config)
    lock = st.lockout
    print(f"TPM:             {rt.endpoint.description}")
    print(f"TPM lockout:     {'LOCKED OUT' if lock.in_lockout else 'no'} "
          f"({lock.failed_tries}/{lock.max_tries} failures)")  # fmt: skip
    print(f"enrolled:        {'yes' if st.enrolled else 'no (run `appliance trust enroll`)'}")
    for key in st.keys:
        verdict = (
            "unseals"
            if key.unsealable
            else f"WILL NOT UNSEAL: PCR {', '.join(map(str, key.differing))} changed; "
            "run `appliance trust recover`"
        )
        pcrs = ",".join(map(str, key.sealed_pcrs))
        print(f"key {key.name:<12} sealed to PCRs {pcrs}: {verdict}")
    print(f"rollback floor:  {'not defined' if st.floor is None else st.floor}")
    return 0 if st.enrolled and all(k.unsealable for k in st.keys) else 1


def cmd_enroll(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    with open_tpm(rt.tcti) as tpm:
        code = core.enroll(tpm, rt.config)
    _audit_trust(rt, who, "enroll")
    print("Keys sealed to PCRs " + ",".join(map(str, rt.config.pcrs)) + ".")
    print("Recovery code (shown ONCE; write it down and keep it off the box):")
    print(f"    {code}")
    return 0


def cmd_recover(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    code = read_secret("recovery code: ", args.code_file, "recovery code", "--code-file")
    predicted = pcr_assignments(args.value, "value")
    with open_tpm(rt.tcti) as tpm:
        core.key_store(rt.config).recover(tpm, code, predicted)
    _audit_trust(rt, who, "recover")
    print("Keys re-sealed to the current PCRs" + (" and predicted values" if predicted else "."))
    return 0


def cmd_plan(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    values = pcr_assignments(args.value, "value")
    extends = pcr_assignments(args.extend, "extend")
    if not values and not extends:
        raise ConfigError("no predicted PCR value given.", "Use --value or --extend.")
    with open_tpm(rt.tcti) as tpm:
        current = tpm.pcr_read(rt.config.pcrs)
        predicted = dict(values)
        for pcr, measurement in extends.items():
            start = predicted.get(pcr, current.get(pcr, bytes(32)))
            predicted[pcr] = predict_extend(start, [measurement])
        core.key_store(rt.config).plan_pcr_change(tpm, predicted)
    _audit_trust(rt, who, "plan-pcr-change", pcrs=",".join(map(str, sorted(predicted))))
    for pcr, value in sorted(predicted.items()):
        print(f"keys also sealed to PCR {pcr} = {value.hex()}")
    return 0


def cmd_counter(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    with open_tpm(rt.tcti) as tpm:
        counter = RollbackCounter(tpm, rt.config.counter_index)
        value = counter.read() if args.advance_to is None else counter.advance_to(args.advance_to)
    if args.advance_to is not None:
        _audit_trust(rt, who, "advance-floor", floor=value)
    print(value)
    return 0


def cmd_model(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    with open_tpm(rt.tcti) as tpm:
        key = core.key_store(rt.config).unseal(tpm, KeyName.MODEL_STORE)
    src = Path(args.src)
    if args.action == "encrypt":
        if not args.dst:
            raise ConfigError("model encrypt needs SRC and DST.", "Name the output file.")
        aead.encrypt_file(key, src, Path(args.dst), model=args.name, version=args.version)
        print(f"encrypted {src} -> {args.dst}")
    else:
        size = len(aead.decrypt_file(key, src, model=args.name, version=args.version))
        print(f"{src}: intact, {size} bytes of model {args.name} {args.version}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    what = "TPM, sealed keys, recovery, anti-rollback floor"
    trust = sub.add_parser("trust", help=what, description=what)
    tsub = trust.add_subparsers(dest="trust_command", metavar="ACTION", required=True)
    command(tsub, "status", "lockout, enrollment, PCR match, floor", cmd_status, "trust status")
    command(
        tsub, "enroll", "seal new keys; show the recovery code once", cmd_enroll, "trust enroll"
    )
    rec = command(tsub, "recover", "re-seal the keys to the current PCRs with the recovery code",
                  cmd_recover, "trust recover")  # fmt: skip
    rec.add_argument("--code-file", help="read the code from this file instead of the terminal")
    rec.add_argument("--value", action="append", default=[], metavar="PCR=SHA256",
                     help="seal to this value instead of the current one (repeatable)")  # fmt: skip
    plan = command(tsub, "plan-pcr-change", "also seal the keys to PCR values predicted for "
                   "after a planned firmware change", cmd_plan,
                   "trust plan-pcr-change")  # fmt: skip
    plan.add_argument("--value", action="append", default=[], metavar="PCR=SHA256",
                      help="the PCR's predicted final value (repeatable)")  # fmt: skip
    plan.add_argument("--extend", action="append", default=[], metavar="PCR=SHA256",
                      help="a measurement to be extended into the PCR (repeatable)")  # fmt: skip
    ctr = command(tsub, "counter", "read or advance the anti-rollback floor", cmd_counter,
                  "trust counter")  # fmt: skip
    ctr.add_argument("--advance-to", type=int, metavar="N", help="raise the floor to N")

    what = "encrypt a model for the store or check an encrypted one"
    model = sub.add_parser("model", help=what, description=what)
    msub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    for action, help_ in (("encrypt", "encrypt SRC into DST"), ("verify", "check SRC is intact")):
        p = command(msub, action, help_, cmd_model, f"model {action}")
        p.set_defaults(action=action)
        if action == "encrypt":
            p.add_argument("src", help="the plaintext model file")
            p.add_argument("dst", help="the encrypted file to write")
        else:
            p.add_argument("src", help="the encrypted model file")
        p.add_argument("--name", required=True, help="model name, bound into the encryption")
        p.add_argument("--version", required=True, help="model version, bound in as well")
