"""`qtrader trade ...` and `qtrader portfolio ...`: manual trades and the portfolio's controls.

Every trade input is validated here with the very models the workflow uses (`PositionInput`,
`ClosePositionRequest`, `RiskPolicy`) *before* anything is started or sent, so a typo is refused with
the field's name and exit code 2. What only the venue can know (is the symbol listed?) is checked by the
workflow's first step; `trade open` waits for that step and reports its answer the same way.

Exit codes: 0 done; 1 an operational error (Temporal unreachable, id taken, update refused, timeout);
2 bad input (nothing was started, or the workflow refused the input at once); 3 the portfolio
rejected the trade (a definite, normal answer with the gate's reason).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from trading.config import Settings
from trading.governor import RiskPolicy
from workflows.errors import ErrorType
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    ClosePositionRequest,
    CloseResult,
    FlattenRequest,
    KillSwitchRequest,
    PortfolioInput,
    PortfolioView,
    PositionInput,
    PositionResult,
    PositionStatus,
    PositionView,
)

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_REJECTED = 0, 1, 2, 3
_CLIENTS_MADE: list[object] = []
POSITION_TYPE = "PositionWorkflow"
# Statuses after which `trade open --wait` stops waiting.
SETTLED = {
    PositionStatus.OPEN,
    PositionStatus.REJECTED,
    PositionStatus.FAILED,
    PositionStatus.CLOSED,
    PositionStatus.CANCELLED,
}
# Statuses that mean the venue check (the workflow's first step) has passed.
VALIDATED = SETTLED | {PositionStatus.GOVERNING, PositionStatus.ENTERING, PositionStatus.CLOSING}
# Command-line flag of each intent field, for error messages.
FLAGS = {
    "symbol": "--symbol",
    "side": "--side",
    "quantity": "--quantity",
    "notional_usdt": "--notional",
    "leverage": "--leverage",
    "strategy": "--strategy",
    "intent_id": "--intent-id",
    "confidence": "--confidence",
    "kill_score": "--kill-score",
    "regime": "--regime",
    "exits.stop_loss_pct": "--stop-loss-pct",
    "exits.take_profit_pct": "--take-profit-pct",
}


class CliError(Exception):
    """Printed as `qtrader: <message>`; `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class UpdateRefused(CliError):
    """The workflow refused an update (its validator or handler said why); nothing was changed."""


# ---------------------------------------------------------------------------------------------- parsing
def add_subcommands(sub: Any, trade: Callable[..., int], portfolio: Callable[..., int]) -> None:
    """Register `trade ...` and `portfolio ...` on the top-level subparsers; `trade` / `portfolio` are the
    handlers `workers.cli` dispatches to (they call `run_trade` / `run_portfolio`)."""
    tr = sub.add_parser(
        "trade",
        help="manual trades: open, close, list and show position workflows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tr_sub = tr.add_subparsers(dest="trade_command", required=True)

    op = tr_sub.add_parser(
        "open",
        help="start a PositionWorkflow for one trade intent",
        epilog="Give the size as exactly one of --notional (USDT) or --quantity (base "
        "asset); or give the whole intent as --json '{...}' (the same JSON as "
        "`temporal workflow start --input`).",
    )
    op.add_argument("--symbol", help="USD-M perpetual, e.g. BTCUSDT")
    op.add_argument("--side", help="LONG or SHORT")
    op.add_argument("--notional", help="size in USDT at entry")
    op.add_argument("--quantity", help="size in the base asset")
    op.add_argument("--leverage", help="1..125 (default 5)")
    op.add_argument("--stop-loss-pct", help="stop-loss distance from entry, %% of entry price")
    op.add_argument("--take-profit-pct", help="take-profit distance from entry, %% of entry price")
    op.add_argument("--strategy", help="strategy tag (default manual)")
    op.add_argument("--confidence", help="0..1 (default 1)")
    op.add_argument("--kill-score", help="0..1 (default 0)")
    op.add_argument("--regime", help="market regime tag (default unknown)")
    op.add_argument("--intent-id", help="your own idempotency / reference id")
    op.add_argument(
        "--json",
        dest="json_input",
        metavar="JSON",
        help="the whole intent as one JSON object (instead of the flags above)",
    )
    op.add_argument(
        "--id",
        dest="workflow_id",
        help="workflow id (default position-SYMBOL-STRATEGY-<random>); an existing id is refused",
    )
    op.add_argument("--wait", action="store_true", help="wait until the position is OPEN, REJECTED or FAILED")
    op.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    op.set_defaults(func=trade, trade_run=_open)

    cl = tr_sub.add_parser("close", help="close a position (all of it, or --quantity of it)")
    cl.add_argument("workflow_id", metavar="ID")
    cl.add_argument("--quantity", help="base-asset quantity to close (default: everything open)")
    cl.add_argument("--reason", default=None, help="reason recorded with the exit (default manual)")
    cl.add_argument("--wait", action="store_true", help="after a full close, wait for the workflow's result")
    cl.add_argument("--timeout", type=float, default=60.0)
    cl.set_defaults(func=trade, trade_run=_close)

    ls = tr_sub.add_parser("list", help="position workflows (running ones; --all for every one)")
    ls.add_argument("--all", action="store_true", help="include closed, rejected and failed positions")
    ls.add_argument("--json", action="store_true", help="print one JSON array")
    ls.set_defaults(func=trade, trade_run=_list)

    sh = tr_sub.add_parser("show", help="one position: state, fills, PnL (or its result once closed)")
    sh.add_argument("workflow_id", metavar="ID")
    sh.add_argument("--json", action="store_true", help="print one JSON object")
    sh.set_defaults(func=trade, trade_run=_show)

    pf = sub.add_parser("portfolio", help="the portfolio workflow: limits, kill switch, emergency flatten")
    pf.add_argument("--portfolio-id", default=DEFAULT_PORTFOLIO_ID, help=f"default {DEFAULT_PORTFOLIO_ID}")
    pf_sub = pf.add_subparsers(dest="portfolio_command", required=True)
    ps = pf_sub.add_parser("show", help="policy, reservations, slots and notional in use")
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(func=portfolio, portfolio_run=_portfolio_show)
    ks = pf_sub.add_parser("kill-switch", help="on: new entries are denied at once (exits still work)")
    ks.add_argument("state", choices=["on", "off"])
    ks.add_argument("--reason", default="operator")
    ks.set_defaults(func=portfolio, portfolio_run=_kill_switch)
    fl = pf_sub.add_parser("flatten", help="EMERGENCY: halt new entries and close every open position")
    fl.add_argument("--reason", required=True)
    fl.set_defaults(func=portfolio, portfolio_run=_flatten)
    em = pf_sub.add_parser("emergency", help="set the emergency-stop state (NORMAL resumes after a flatten)")
    em.add_argument("state", choices=["NORMAL", "WARNING", "CRITICAL", "HALTED"])
    em.set_defaults(func=portfolio, portfolio_run=_emergency)
    po = pf_sub.add_parser(
        "policy",
        help="show the active risk policy, or change fields of it",
        epilog="Values are JSON (5, 2.5, true) or text; allowlist takes BTCUSDT,ETHUSDT or *.",
    )
    po.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    po.add_argument("--json", action="store_true")
    po.set_defaults(func=portfolio, portfolio_run=_policy)


def run_trade(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args.trade_run, args, settings)


def run_portfolio(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args.portfolio_run, args, settings)


def _run(fn: Callable[..., Any], args: argparse.Namespace, settings: Settings) -> int:
    try:
        code = int(asyncio.run(fn(args, settings)))
    except CliError as err:
        print(f"qtrader: {err}", file=sys.stderr)
        code = err.code
    except BrokenPipeError:  # `qtrader trade list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    if _CLIENTS_MADE and _is_cli_process():
        # The Temporal client's Rust threads can abort interpreter shutdown ("PyGILState_Release: thread
        # state ... must be current", temporalio/sdk-python#300): the command is done, leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _is_cli_process() -> bool:
    """True when this process is `qtrader` / `python -m workers.cli` itself (not a test calling main())."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return (spec is not None and spec.name == "workers.cli") or os.path.basename(sys.argv[0]) == "qtrader"


# ---------------------------------------------------------------------------------------------- validation
def describe_errors(err: ValidationError, flags: dict[str, str] | None = None) -> str:
    """`field: problem` for each error, with the command-line flag where there is one."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "input"
        flag = (flags or {}).get(loc)
        lines.append(f"{loc}{f' ({flag})' if flag else ''}: {e['msg']}")
    return "; ".join(lines)


def parse_intent(raw: object, flags: dict[str, str] | None = None) -> PositionInput:
    """Validate a manual trade exactly as the workflow will, and refuse what only the workflow may set."""
    if not isinstance(raw, dict):
        raise CliError(f"input: the intent must be a JSON object, not {type(raw).__name__}", EXIT_BAD_INPUT)
    if raw.get("carry") is not None:
        raise CliError("carry: only set by the workflow's own continue-as-new", EXIT_BAD_INPUT)
    try:
        return PositionInput.model_validate(raw)
    except ValidationError as err:
        raise CliError(f"invalid trade intent: {describe_errors(err, flags)}", EXIT_BAD_INPUT) from None


def intent_from_args(args: argparse.Namespace) -> PositionInput:
    flag_values = {
        "symbol": args.symbol,
        "side": args.side,
        "notional_usdt": args.notional,
        "quantity": args.quantity,
        "leverage": args.leverage,
        "strategy": args.strategy,
        "confidence": args.confidence,
        "kill_score": args.kill_score,
        "regime": args.regime,
        "intent_id": args.intent_id,
    }
    exits = {"stop_loss_pct": args.stop_loss_pct, "take_profit_pct": args.take_profit_pct}
    given = {k: v for k, v in flag_values.items() if v is not None}
    given_exits = {k: v for k, v in exits.items() if v is not None}
    if args.json_input is not None:
        if given or given_exits:
            raise CliError("give the intent either as --json or as flags, not both", EXIT_BAD_INPUT)
        try:
            raw = json.loads(args.json_input)
        except json.JSONDecodeError as err:
            raise CliError(f"--json: not valid JSON ({err})", EXIT_BAD_INPUT) from None
        return parse_intent(raw)
    raw = {**given, "source": "manual"}
    if given_exits:
        raw["exits"] = given_exits
    return parse_intent(raw, FLAGS)


def summary(intent: PositionInput) -> str:
    if intent.notional_usdt is not None:
        size = f"{intent.notional_usdt} USDT"
    else:
        size = f"{intent.quantity} {intent.symbol.removesuffix('USDT')}"
    return f"{intent.side.value} {intent.symbol} {size} ({intent.strategy})"


def default_workflow_id(intent: PositionInput) -> str:
    return f"position-{intent.symbol}-{intent.strategy}-{uuid.uuid4().hex[:8]}"


def ui_link(settings: Settings, workflow_id: str) -> str:
    host = settings.temporal_address.rpartition(":")[0] or "127.0.0.1"
    return (
        f"http://{host}:{settings.temporal_ui_port}/namespaces/{quote(settings.temporal_namespace)}"
        f"/workflows/{quote(workflow_id, safe='')}"
    )


def _parse_model(model: type[BaseModel], raw: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise CliError(f"invalid {what}: {describe_errors(err)}", EXIT_BAD_INPUT) from None


# ---------------------------------------------------------------------------------------------- Temporal
async def _client(settings: Settings) -> Client:
    from workers.temporal_client import connect

    _CLIENTS_MADE.append(True)
    try:
        return await asyncio.wait_for(connect(settings), timeout=10)
    except (TimeoutError, RuntimeError, OSError) as err:
        raise CliError(
            f"cannot reach Temporal at {settings.temporal_address} ({err or 'timed out'}); "
            "is the stack up (`qtrader stack up`)?"
        ) from None


def _failure_text(err: BaseException) -> tuple[str, str | None]:
    """The innermost failure message of a workflow / update error and its application error type."""
    from temporalio.exceptions import ApplicationError

    cause: BaseException | None = err
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause  # type: ignore[union-attr]
    text = getattr(cause, "message", None) or str(cause)
    return text, cause.type if isinstance(cause, ApplicationError) else None


def _not_found(err: BaseException) -> bool:
    from temporalio.service import RPCError, RPCStatusCode

    return isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND


async def _position_status(handle: WorkflowHandle) -> tuple[Any, PositionStatus | None]:
    """Run status and the PositionStatus search attribute, from `describe` (no worker needed)."""
    from workflows.search_attributes import SA_STATUS

    desc = await handle.describe()
    value = desc.typed_search_attributes.get(SA_STATUS)
    return desc.status, PositionStatus(value) if value else None


async def _failed_outcome(handle: WorkflowHandle) -> CliError:
    from temporalio.client import WorkflowFailureError

    try:
        await handle.result()
    except WorkflowFailureError as err:
        text, kind = _failure_text(err)
        if kind == ErrorType.UNKNOWN_SYMBOL and not text.startswith("symbol:"):
            text = f"symbol: {text}"
        bad_input = kind in (ErrorType.INVALID_INTENT, ErrorType.VALIDATION_ERROR, ErrorType.UNKNOWN_SYMBOL)
        return CliError(f"{handle.id} failed: {text}", EXIT_BAD_INPUT if bad_input else EXIT_ERROR)
    return CliError(f"{handle.id} ended unexpectedly")


async def _open(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    intent = intent_from_args(args)  # raises before anything is started
    workflow_id = args.workflow_id or default_workflow_id(intent)
    if not workflow_id.strip() or workflow_id != workflow_id.strip():
        raise CliError("--id: must be non-empty without surrounding spaces", EXIT_BAD_INPUT)
    client = await _client(settings)
    try:
        handle = await client.start_workflow(
            POSITION_TYPE,
            intent,
            id=workflow_id,
            task_queue=LIFECYCLE_TASK_QUEUE,
            result_type=PositionResult,
            # A position id is never reused: client order ids derive from it.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=summary(intent),
        )
    except WorkflowAlreadyStartedError:
        raise CliError(
            f"workflow id {workflow_id!r} already exists (running or closed): nothing was "
            "started; choose another --id"
        ) from None
    print(f"started {workflow_id}: {summary(intent)}")
    print(f"Web UI  {ui_link(settings, workflow_id)}")
    sys.stdout.flush()

    # Wait for the venue check (always, briefly), or until the position settles (--wait).
    deadline = time.monotonic() + (args.timeout if args.wait else min(args.timeout, 10.0))
    target = SETTLED if args.wait else VALIDATED
    status: PositionStatus | None = None
    while time.monotonic() < deadline:
        run_status, status = await _position_status(handle)
        if run_status == WorkflowExecutionStatus.FAILED:
            raise await _failed_outcome(handle)
        if run_status != WorkflowExecutionStatus.RUNNING and run_status != WorkflowExecutionStatus.COMPLETED:
            raise CliError(f"{workflow_id} is {run_status.name if run_status else 'gone'}")
        if run_status == WorkflowExecutionStatus.COMPLETED or (status is not None and status in target):
            break
        await asyncio.sleep(0.1)
    else:
        if args.wait:
            raise CliError(
                f"{workflow_id}: still {status.value if status else 'VALIDATING'} after "
                f"{args.timeout:g} s (are both workers running?)"
            )
        print(
            f"status  {status.value if status else 'VALIDATING'} (not validated yet; "
            "is the lifecycle worker running?)"
        )
        return EXIT_OK
    run_status, status = await _position_status(handle)
    if run_status == WorkflowExecutionStatus.COMPLETED:
        result: PositionResult = await handle.result()
        if result.status == PositionStatus.REJECTED:
            print(f"status  REJECTED by {result.rejection_gate}: {result.rejection_reason}")
            return EXIT_REJECTED
        print(f"status  {result.status.value}")
        return EXIT_OK
    if args.wait:
        view: PositionView = await handle.query("state", result_type=PositionView)
        print(_format_view(view))
    else:
        print(
            f"status  {status.value if status else 'VALIDATING'} (follow it with `qtrader trade show "
            f"{workflow_id}`)"
        )
    return EXIT_OK


async def _close(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError

    raw: dict[str, Any] = {}
    if args.quantity is not None:
        raw["quantity"] = args.quantity
    if args.reason is not None:
        raw["reason"] = args.reason
    request: ClosePositionRequest = _parse_model(ClosePositionRequest, raw, "close request")
    client = await _client(settings)
    handle = client.get_workflow_handle(args.workflow_id, result_type=PositionResult)
    try:
        result: CloseResult = await handle.execute_update(
            "close",
            request.model_dump(mode="json", exclude_none=True),
            result_type=CloseResult,
            rpc_timeout=timedelta(seconds=args.timeout),
        )
    except WorkflowUpdateFailedError as err:
        raise CliError(f"close refused: {_failure_text(err)[0]}") from None
    except RPCError as err:
        if _not_found(err) and "completed" in err.message:
            raise CliError(
                f"close refused: {args.workflow_id} has already finished; see `qtrader trade show "
                f"{args.workflow_id}`"
            ) from None
        if _not_found(err):
            raise CliError(f"close refused: no position workflow {args.workflow_id!r}") from None
        raise CliError(f"close failed: {err.message}") from None
    if result.noop:
        print(f"nothing closed: {result.detail}")
    else:
        print(f"closed {result.closed_qty} @ {result.avg_price}; remaining {result.remaining_qty}")
    if args.wait and result.remaining_qty == 0:
        final: PositionResult = await asyncio.wait_for(handle.result(), args.timeout)
        print(
            f"result  {final.status.value}: {final.quantity} {final.symbol} entry {final.entry_price} exit "
            f"{final.exit_price}; realized {final.realized_pnl} USDT (fees {final.fees})"
        )
    return EXIT_OK


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return str(value)


def _format_view(v: PositionView) -> str:
    return "\n".join(
        [
            f"status  {v.status.value}  {v.side.value} {_fmt(v.open_qty)} {v.symbol} @ {_fmt(v.entry_price)}",
            f"mark    {_fmt(v.mark_price)}  unrealized {_fmt(v.unrealized_pnl)}  "
            f"realized {_fmt(v.realized_pnl)}"
            f"  fees {_fmt(v.fees)}",
            f"stops   stop-loss {_fmt(v.stop_loss_price)}  take-profit {_fmt(v.take_profit_price)}  "
            f"hard stop {_fmt(v.hard_stop_price)}",
            *([f"reason  {v.reason}"] if v.reason else []),
        ]
    )


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.client import WorkflowExecutionStatus

    from workflows.search_attributes import SA_REALIZED_PNL, SA_SIDE, SA_STATUS, SA_SYMBOL

    client = await _client(settings)
    query = f"WorkflowType='{POSITION_TYPE}'" + ("" if args.all else " AND ExecutionStatus='Running'")
    executions = [e async for e in client.list_workflows(query)]

    async def row(e: Any) -> dict[str, Any]:
        sa = e.search_attributes
        base = {
            "workflow_id": e.id,
            "run_status": e.status.name if e.status else None,
            "symbol": (sa.get(SA_SYMBOL.name) or [None])[0],
            "side": (sa.get(SA_SIDE.name) or [None])[0],
            "status": (sa.get(SA_STATUS.name) or ["VALIDATING"])[0],
            "realized_pnl": (sa.get(SA_REALIZED_PNL.name) or [None])[0],
            "started": e.start_time.isoformat() if e.start_time else None,
        }
        if e.status != WorkflowExecutionStatus.RUNNING:
            return base
        try:
            v: PositionView = await client.get_workflow_handle(e.id).query(
                "state", result_type=PositionView, rpc_timeout=timedelta(seconds=5)
            )
        except Exception as err:  # no worker, or the run just ended: keep what visibility knows
            return {**base, "error": str(err)}
        return {**base, **v.model_dump(mode="json", exclude={"workflow_id"})}

    rows = await asyncio.gather(*(row(e) for e in executions))
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    if not rows:
        print("no position workflows" + ("" if args.all else " running"))
        return EXIT_OK
    header = ("WORKFLOW ID", "SYMBOL", "SIDE", "STATUS", "QTY", "ENTRY", "MARK", "UPNL", "STOP", "REALIZED")
    table = [header] + [
        (
            r["workflow_id"],
            _fmt(r.get("symbol")),
            _fmt(r.get("side")),
            _fmt(r.get("status")),
            _fmt(r.get("open_qty")),
            _fmt(r.get("entry_price")),
            _fmt(r.get("mark_price")),
            _fmt(r.get("unrealized_pnl")),
            _fmt(r.get("stop_loss_price") or r.get("hard_stop_price")),
            _fmt(r.get("realized_pnl")),
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return EXIT_OK


async def _show(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
    from temporalio.service import RPCError

    from trading.pnl import Fill

    client = await _client(settings)
    handle = client.get_workflow_handle(args.workflow_id, result_type=PositionResult)
    try:
        desc = await handle.describe()
    except RPCError as err:
        if _not_found(err):
            raise CliError(f"no position workflow {args.workflow_id!r}") from None
        raise CliError(str(err)) from None
    out: dict[str, Any] = {
        "workflow_id": handle.id,
        "run_status": desc.status.name if desc.status else None,
        "link": ui_link(settings, handle.id),
    }
    if desc.status == WorkflowExecutionStatus.RUNNING:
        view = await handle.query("state", result_type=PositionView)
        fills = await handle.query("fills", result_type=list[Fill])
        pnl = await handle.query("pnl", result_type=dict[str, Decimal])
        out.update(
            state=view.model_dump(mode="json"),
            fills=[f.model_dump(mode="json") for f in fills],
            pnl={k: str(v) for k, v in pnl.items()},
        )
    elif desc.status == WorkflowExecutionStatus.COMPLETED:
        result = await handle.result()
        out["result"] = result.model_dump(mode="json")
    else:
        try:
            await handle.result()
        except WorkflowFailureError as err:
            out["failure"] = _failure_text(err)[0]
        except Exception as err:
            out["failure"] = str(err)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return EXIT_OK
    print(f"{out['workflow_id']}  ({out['run_status']})  {out['link']}")
    if "state" in out:
        print(_format_view(PositionView.model_validate(out["state"])))
        for f in out["fills"]:
            print(f"fill    {f['side']} {f['qty']} @ {f['price']}  fee {f['fee']}  ({f['client_order_id']})")
        print("pnl     " + "  ".join(f"{k} {v}" for k, v in out["pnl"].items()))
    elif "result" in out:
        r = out["result"]
        print(
            f"result  {r['status']} {r['side']} {r['quantity']} {r['symbol']}  entry {r['entry_price']}  "
            f"exit {r['exit_price']}  realized {r['realized_pnl']} (fees {r['fees']})"
        )
        reason = r.get("exit_reason") or r.get("rejection_reason")
        if reason:
            print(f"reason  {reason}")
    else:
        print(f"failure {out.get('failure')}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- portfolio
def _portfolio_start(portfolio_id: str, settings: Settings) -> Any:
    """Start-if-absent operation: the portfolio gets the policy of this environment (GOV_* settings), as
    the lifecycle worker would give it."""
    from temporalio.client import WithStartWorkflowOperation
    from temporalio.common import WorkflowIDConflictPolicy

    return WithStartWorkflowOperation(
        "PortfolioWorkflow",
        PortfolioInput(
            policy=RiskPolicy.from_settings(settings),
            holder_check_seconds=getattr(settings, "portfolio_holder_check_seconds", 30.0),
        ),
        id=portfolio_id,
        task_queue=LIFECYCLE_TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary="Portfolio: position slots, notional budget and risk limits",
    )


async def portfolio_update(
    client: Client, settings: Settings, portfolio_id: str, name: str, arg: Any, result_type: type
) -> Any:
    """Run one of the portfolio's validated operator updates (`set_kill_switch`, `emergency_flatten`,
    `set_emergency_state`, `set_policy`), starting the portfolio first if it is not running. A refusal
    (the workflow's validator) or an RPC failure raises CliError with the reason. The CLI and the web
    dashboard both come through here."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError

    try:
        return await client.execute_update_with_start_workflow(
            name,
            arg,
            start_workflow_operation=_portfolio_start(portfolio_id, settings),
            result_type=result_type,
            rpc_timeout=timedelta(seconds=30),
        )
    except WorkflowUpdateFailedError as err:
        raise UpdateRefused(f"{name} refused: {_failure_text(err)[0]}") from None
    except RPCError as err:
        raise CliError(f"{name} failed: {err.message}") from None


async def _portfolio_update(
    args: argparse.Namespace, settings: Settings, name: str, arg: Any, result_type: type
) -> Any:
    client = await _client(settings)
    return await portfolio_update(client, settings, args.portfolio_id, name, arg, result_type)


async def _portfolio_view(args: argparse.Namespace, settings: Settings) -> PortfolioView | None:
    from temporalio.service import RPCError

    client = await _client(settings)
    try:
        return await client.get_workflow_handle(args.portfolio_id).query(
            "state", result_type=PortfolioView, rpc_timeout=timedelta(seconds=10)
        )
    except RPCError as err:
        if _not_found(err):
            return None
        raise CliError(f"cannot query {args.portfolio_id}: {err.message}") from None


def _print_policy(policy: RiskPolicy) -> None:
    for key, value in policy.model_dump(mode="json").items():
        print(f"  {key:<28} {','.join(value) if isinstance(value, list) else value}")


async def _portfolio_show(args: argparse.Namespace, settings: Settings) -> int:
    view = await _portfolio_view(args, settings)
    if view is None:
        if args.json:
            policy = RiskPolicy.from_settings(settings).model_dump(mode="json")
            print(json.dumps({"running": False, "policy": policy}))
        else:
            print(
                f"{args.portfolio_id} is not running yet (the first position, or `qtrader portfolio "
                "kill-switch`, starts it); it would start with this policy:"
            )
            _print_policy(RiskPolicy.from_settings(settings))
        return EXIT_OK
    if args.json:
        print(json.dumps({"running": True, **view.model_dump(mode="json")}, indent=2))
        return EXIT_OK
    switch = "ON" if view.policy.kill_switch else "off"
    print(f"{args.portfolio_id}: {view.book.emergency.value}, kill switch {switch}")
    print(
        f"slots   {view.slots_used}/{view.policy.max_open_positions}   notional {_fmt(view.notional_used)}"
        f"/{_fmt(view.policy.max_total_notional_usdt)} USDT   granted {view.granted_total}  "
        f"denied {view.denied_total}"
    )
    for holder, r in sorted(view.book.reservations.items()):
        print(f"  {holder:<40} {r.symbol:<12} {r.side.value:<5} {_fmt(r.notional_usdt)} USDT")
    print("policy")
    _print_policy(view.policy)
    return EXIT_OK


async def _kill_switch(args: argparse.Namespace, settings: Settings) -> int:
    request = _parse_model(
        KillSwitchRequest, {"on": args.state == "on", "reason": args.reason}, "kill switch"
    )
    policy = await _portfolio_update(
        args, settings, "set_kill_switch", request.model_dump(mode="json"), RiskPolicy
    )
    print(
        f"kill switch {'ON: new entries are denied' if policy.kill_switch else 'off: entries allowed'} "
        f"({args.portfolio_id})"
    )
    return EXIT_OK


async def _flatten(args: argparse.Namespace, settings: Settings) -> int:
    request = _parse_model(FlattenRequest, {"reason": args.reason}, "flatten request")
    holders = await _portfolio_update(
        args, settings, "emergency_flatten", request.model_dump(mode="json"), list[str]
    )
    print(f"{args.portfolio_id} HALTED; told {len(holders)} position(s) to close:")
    for holder in holders:
        print(f"  {holder}")
    return EXIT_OK


async def _emergency(args: argparse.Namespace, settings: Settings) -> int:
    state = await _portfolio_update(args, settings, "set_emergency_state", args.state, str)
    print(f"{args.portfolio_id} emergency state {state}")
    return EXIT_OK


def _assignment_value(key: str, text: str) -> Any:
    if key == "allowlist":
        return [s for s in (p.strip() for p in text.split(",")) if s]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


async def _policy(args: argparse.Namespace, settings: Settings) -> int:
    changes: dict[str, Any] = {}
    for item in args.assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set {item!r}: expected KEY=VALUE", EXIT_BAD_INPUT)
        changes[key.strip()] = _assignment_value(key.strip(), value.strip())
    view = await _portfolio_view(args, settings)
    current = view.policy if view is not None else RiskPolicy.from_settings(settings)
    if not changes:
        if args.json:
            print(json.dumps(current.model_dump(mode="json"), indent=2))
        else:
            note = "" if view else " (not running yet: from settings)"
            print(f"active policy of {args.portfolio_id}{note}")
            _print_policy(current)
        return EXIT_OK
    # Checked here first against the current policy; the update itself changes only these fields.
    _parse_model(RiskPolicy, {**current.model_dump(mode="json"), **changes}, "policy")
    applied = await _portfolio_update(args, settings, "set_policy", changes, RiskPolicy)
    if args.json:
        print(json.dumps(applied.model_dump(mode="json"), indent=2))
    else:
        print(f"policy of {args.portfolio_id} updated: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
        _print_policy(applied)
    return EXIT_OK
