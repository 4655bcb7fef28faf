"""``poise merge``: the merging domain's command (registered like its kinds, imported on every
invocation, so everything heavy is imported inside the command)."""

from __future__ import annotations

import json

import typer

from poise.registry import command


@command("merge", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
         add_help_option=False)
def merge(ctx: typer.Context) -> None:
    """Merge models (linear, SLERP, TIES, DARE, DELLA, ...: -h lists them); --sweep t=0..1 traces a frontier."""
    from poise.merging.command import build, parser, preflight, usage

    args = parser().parse_args(ctx.args)
    if args.help:
        typer.echo(usage())
        return
    from poise.recipes import build_recipe
    from poise.runner import Runner
    from poise.session import open_store
    from poise.ui import TextTable, get_ui, metrics_table

    ui = get_ui()
    data = build(args)
    store = open_store()
    preflight(store, data)
    recipe = build_recipe(data, where="poise merge")
    result = Runner(store, ui).run(recipe)
    sweep = recipe.kind == "merging.sweep"
    name = "sweep" if sweep else "lineage"
    info = json.loads(store.artifact(result.id, name).path.read_text())
    if ui.json:
        ui.emit({"run": result.id, "kind": result.kind, "status": result.status, name: info})
        return
    if sweep:
        metrics = sorted({k for p in info["points"] for k in p["metrics"]})
        t = TextTable(title=f"sweep {result.id}: {info['method']} from {info['models'][0]['label']} (t=0) to "
                            f"{info['models'][1]['label']} (t=1)")
        for c in ("t", "run", *metrics):
            t.add_column(c, justify="left" if c == "run" else "right")
        for p in info["points"]:
            cells = [f"{p['metrics'][k]:.4g}" if k in p["metrics"] else "" for k in metrics]
            t.add_row(f"{p['t']:g}", p["run"], *cells)
        ui.print(t)
        return
    where = info.get("output") or f"store artifact model sha256:{info['artifact']['sha256'][:16]}…"
    ui.print(f"run {result.id} (merging.merge) {result.status}: {info['method']} of "
             f"{', '.join(m['label'] for m in info['models'])}"
             + (f" on base {info['base']['label']}" if info.get("base") else "")
             + f" → {where} ({info['merged_tensors']} of {info['tensors']} tensors merged, "
               f"{info['bytes'] / 1e6:.1f} MB, {info['seconds']:.2f} s)")
    if info.get("metrics"):
        ui.print(metrics_table("metrics of the merged model", info["metrics"]))
