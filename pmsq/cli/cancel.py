"""``pmsq cancel URL QUEUE ID... | --key K [--tenant T]``: withdraw messages."""

from __future__ import annotations

import argparse
import json
import sys

from pmsq.cli._common import CommandError, add_url, open_store, require_queue

EXAMPLES = """\
A cancelled message is removed for good, whatever its state short of acked
or dead: waiting, delayed, waiting to retry, or in flight (its worker
notices at its next heartbeat: an async handler is cancelled, a sync one's
outcome discarded). A cancelled key head lets the key's next message move
up. The journal records each cancellation (pmsq trace).

Keys are scoped per tenant: --key without --tenant means the tenantless key.

exit status: 0 every named message was cancelled (with --key: also when
none was waiting), 1 an error or an ID that was not cancelled (unknown,
already acked, dead or cancelled).

examples:
  pmsq cancel pms.db email 06H3GMZZSDMPAE4A0X75448764
  pmsq cancel pms.db email 06H3GMZZSDMPAE4A0X75448764 --tenant acme
  pmsq cancel pms.db reminders --key booking:8812 --tenant acme
  pmsq cancel pms.db reminders --key booking:8812 --tenant acme --json
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``cancel`` subcommand."""
    p = sub.add_parser(
        "cancel",
        help="cancel messages by id, or every unacked message of a key",
        description=(
            "Cancel messages of a queue that are not acked yet: by message id, or all of "
            "one key's (--key, with --tenant for a tenant's key), in one transaction."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument("queue", metavar="QUEUE", help="queue name")
    p.add_argument("ids", nargs="*", metavar="ID", help="message ids to cancel")
    p.add_argument("--key", help="cancel every unacked message of this key instead")
    p.add_argument(
        "--tenant",
        help="with --key: the key's tenant; with IDs: only that tenant's messages (a guard)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if bool(args.ids) == (args.key is not None):
        raise CommandError("give message IDs or --key K (one of the two)")
    if args.key is not None and not args.key:
        raise CommandError("--key takes a non-empty key")


def run(args: argparse.Namespace) -> int:
    """Cancel, print what was cancelled; exit 1 if a named id was not."""
    from pmsq.control import cancel_ids

    _check(args)
    with open_store(args.url) as broker:
        require_queue(broker, args.queue)
        if args.key is not None:
            count = broker.queue(args.queue).cancel(key=args.key, tenant=args.tenant)
            if args.json:
                print(json.dumps({"key": args.key, "tenant": args.tenant, "cancelled": count}))
            else:
                owner = f" of tenant {args.tenant}" if args.tenant is not None else ""
                noun = "message" if count == 1 else "messages"
                print(f"cancelled {count} {noun} of key {args.key}{owner} in {args.queue}")
            return 0
        # One transaction for every id, with the ids it really removed.
        removed = set(cancel_ids(broker.runtime, args.queue, list(args.ids), tenant=args.tenant))
    done = [mid for mid in dict.fromkeys(args.ids) if mid in removed]
    missed = [mid for mid in dict.fromkeys(args.ids) if mid not in removed]
    if args.json:
        print(json.dumps({"cancelled": done, "not_cancelled": missed}))
    else:
        for mid in done:
            print(f"cancelled {mid}")
    owner = f" of tenant {args.tenant}" if args.tenant is not None else ""
    for mid in missed:
        print(
            f"pmsq cancel: {mid} was not cancelled: no such unacked message in "
            f"{args.queue}{owner} (unknown, already acked, dead or cancelled)",
            file=sys.stderr,
        )
    return 1 if missed else 0
