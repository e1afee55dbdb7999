"""The benchmark stage: needle grids x compression points -> metrics/benchmark.json and its plots.

    ocrmem benchmark [--params params.yaml] [--size cpu|gpu] [--points fs20 ...]  # ocrmem.evaluation.benchmark
    ocrmem benchmark --points fs20 --no-report    # one point (benchmark/dvc.yaml's matrix)
    ocrmem benchmark --report-only                # the report of the saved points
"""

from __future__ import annotations

HELP = "needle grids x compression points -> metrics/benchmark.json"
SETTINGS = "models"
METRICS = "metrics/benchmark.json"


def add_arguments(p) -> None:
    p.add_argument("--size", help="cpu (minutes on 2 cores) or gpu (every kind, both languages); default benchmark.size")
    p.add_argument("--adapter", default=None, help="adapter dir (default: train.output_dir/adapter)")
    p.add_argument("--kinds", nargs="+", help="task kinds (ocrmem.tasks.needles.KINDS); default: the size's")
    p.add_argument("--langs", nargs="+", help="en, zh")
    p.add_argument("--pages", nargs="+", type=int, help="history lengths in pages")
    p.add_argument("--depths", nargs="+", type=float, help="needle depths, fractions 0..1")
    p.add_argument("--samples", type=int, help="examples per cell")
    p.add_argument("--points", nargs="+", help="compression points (ocrmem.settings.BENCH_POINTS); default benchmark.points")
    p.add_argument("--conditions", nargs="+", help="default: the size's (gpu: eval.conditions)")
    p.add_argument("--point-pages", nargs="+", type=int, help="lengths at the points after the first")
    p.add_argument("--loss", action="store_true", help="also score the answer loss (a second forward pass)")
    once = p.add_mutually_exclusive_group()
    once.add_argument("--no-report", action="store_true", help="only run and save the points (one DVC stage each)")
    once.add_argument("--report-only", action="store_true", help="only the report of the saved points")


def run(args, s) -> int:
    from ocrmem.evaluation.benchmark import benchmark, benchmark_report

    if args.report_only:
        benchmark_report(s, points=args.points)
        return 0
    benchmark(s, report=not args.no_report, size=args.size, adapter_dir=args.adapter, kinds=args.kinds,
              langs=args.langs, pages=args.pages, depths=args.depths, samples=args.samples, points=args.points,
              conditions=args.conditions, point_pages=args.point_pages, score_loss=True if args.loss else None)
    return 0
