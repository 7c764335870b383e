"""``bayesmeta datasets [list | describe NAME | path NAME]``: the bundled datasets."""

from __future__ import annotations

from bayesmeta.cli._help import FORMATTER, epilog


def add_parser(subparsers):
    p = subparsers.add_parser(
        "datasets", help="list, describe or locate the bundled datasets",
        description="Bundled datasets (checksum-verified on every load). With no action, "
                    "lists them.",
        epilog=epilog("bayesmeta datasets list",
                      "bayesmeta datasets describe bcg",
                      "bayesmeta classical $(bayesmeta datasets path bcg) --measure RR"),
        formatter_class=FORMATTER)
    sub = p.add_subparsers(dest="action", metavar="ACTION", title="actions")
    sub.add_parser("list", help="list datasets with rows and description",
                   description="List the bundled datasets with their rows and description.",
                   epilog=epilog("bayesmeta datasets list"), formatter_class=FORMATTER)
    d = sub.add_parser("describe", help="source, license, columns and findings of a dataset",
                       description="Source, license, columns and findings of one dataset.",
                       epilog=epilog("bayesmeta datasets describe bcg"),
                       formatter_class=FORMATTER)
    d.add_argument("name", metavar="NAME", help="dataset name, as listed by 'datasets list'")
    q = sub.add_parser("path", help="print the path of a dataset's CSV file",
                       description="Print the path of a dataset's CSV file (to read or copy).",
                       epilog=epilog("bayesmeta datasets path bcg"), formatter_class=FORMATTER)
    q.add_argument("name", metavar="NAME", help="dataset name, as listed by 'datasets list'")
    p.set_defaults(func=run, action=None)
    return p


def run(args) -> int:
    from bayesmeta.datasets import dataset_info, dataset_path, describe_dataset, list_datasets
    from bayesmeta.datasets import load_dataset

    action = getattr(args, "action", None) or "list"
    if action == "list":
        names = list_datasets()
        width = max(len(n) for n in names)
        for n in names:
            info = dataset_info(n)
            rows = len(load_dataset(n))
            desc = info.get("description", "")
            desc = desc if len(desc) <= 70 else desc[:67] + "..."
            print(f"{n:<{width}}  {rows:>4} rows  {desc}")
        return 0
    if action == "describe":
        print(describe_dataset(args.name))
        return 0
    if action == "path":
        dataset_info(args.name)  # unknown name -> DataError with did-you-mean
        print(dataset_path(args.name))
        return 0
    raise AssertionError(action)  # pragma: no cover - argparse restricts the choices
