"""The README's tables and figures against the code: the trainer's flag table, the search ranges, the export size."""

import math
import re

import pytest
from conftest import ROOT

from trainer.cli import build_parser
from wals2.config import MODES

README = (ROOT / "README.md").read_text(encoding="utf-8")
KB, MIB = 1000, 1024 * 1024


def section(title: str) -> str:
    """The README text from the heading ``title`` to the next heading of the same or a higher level."""
    level = title.split(" ")[0]
    start = README.index(f"\n{title}\n")
    end = re.search(rf"\n#{{1,{len(level)}}} ", README[start + len(title) + 2 :])
    return README[start : start + len(title) + 2 + end.start()] if end else README[start:]


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of each markdown table row of ``text`` whose first cell starts with ``first_cell``."""
    rows = []
    for line in text.splitlines():
        if line.startswith(f"| {first_cell}"):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def readme_flags() -> dict[str, str]:
    """flag -> its default cell in the trainer's flag table (``| `--a`, `--b` | 1, 2 | ... |`` gives two)."""
    table = {}
    for cells in table_rows(section("## The trainer"), "`--"):
        names = [name.strip(" `") for name in cells[0].split(",")]
        defaults = [value.strip() for value in cells[1].split(",")] if len(names) > 1 else [cells[1]]
        assert len(names) == len(defaults), cells
        table.update(zip(names, defaults, strict=True))
    return table


def parser_flags() -> dict[str, object]:
    """flag -> default of every documented flag of ``python -m trainer.task`` (``--no-X`` is a hidden twin)."""
    import dataclasses

    from trainer import flags
    from trainer.config import TaskConfig
    from wals2.config import WALSConfig

    defaults = {flags.flag_name(f): f.default for cls in (TaskConfig, WALSConfig) for f in dataclasses.fields(cls)}
    listed = {
        action.option_strings[0]
        for action in build_parser()._actions
        if action.dest != "help" and action.help != "==SUPPRESS=="
    }
    assert listed == set(defaults)  # the parser documents exactly the config fields
    return defaults


def matches(cell: str, default) -> bool:
    """Whether the README's default ``cell`` states ``default``: on/off for a bool, ``tab`` for a tab, the
    number or the string itself; for None (computed at run time) any description that is not a literal value."""
    text = cell.strip("`")
    if isinstance(default, bool):
        return text == ("on" if default else "off")
    if default is None:
        try:
            float(text)
        except ValueError:
            return text not in ("on", "off")
        return False
    if isinstance(default, (int, float)):
        try:
            return math.isclose(float(text), default)
        except ValueError:
            return False
    return text == ("tab" if default == "\t" else default)


def test_matches_reads_the_readme_conventions():
    assert matches("off", False) and matches("on", True) and not matches("on", False)
    assert matches("tab", "\t") and matches("`ratings`", "ratings") and not matches("`normal`", "scaled")
    assert matches("0", 0.0) and matches("600", 600.0) and not matches("0.1", 0.2) and not matches("x", 1)
    assert matches("`$AIP_CHECKPOINT_DIR`, else `<output-dir>/checkpoints`", None) and not matches("5", None)


def test_the_trainer_flag_table_lists_every_flag_with_the_parser_default():
    table, parser = readme_flags(), parser_flags()
    assert sorted(set(parser) - set(table)) == [], "flags of --help missing from the README table"
    assert sorted(set(table) - set(parser)) == [], "flags in the README table that the parser lacks"
    wrong = {flag: (table[flag], parser[flag]) for flag in parser if not matches(table[flag], parser[flag])}
    assert wrong == {}, "README default cell vs the parser's default"


RANGE = re.compile(r"`(\w+)` \[([-\d.e]+), ([-\d.e]+)\] (\w+)")
BOOLEAN = re.compile(r"`(\w+)` on/off")


def test_the_tuning_ranges_are_the_search_space_of_each_mode():
    pytest.importorskip("keras_tuner")
    import keras_tuner as kt

    from tuning.search import search_space
    from wals2.config import WALSConfig
    from wals2.modes import mode_of

    rows = [cells for cells in table_rows(section("## Tuning"), "`") if not cells[0].startswith("`--")]  # not flags
    seen = set()
    for cells in rows:
        mode = re.match(r"`(\w+)`", cells[0]).group(1)
        wt_type = 0 if "--wt_type 0" in cells[0] else 1
        seen.add((mode, wt_type))
        stated = {m[0]: (float(m[1]), float(m[2]), m[3]) for m in RANGE.findall(cells[1])}
        stated |= {name: "on/off" for name in BOOLEAN.findall(cells[1])}
        hp = kt.HyperParameters()
        search_space(hp, mode_of(WALSConfig(mode=mode, wt_type=wt_type)))
        searched = {  # hp.Boolean has no range
            p.name: (p.min_value, p.max_value, p.sampling) if hasattr(p, "min_value") else "on/off" for p in hp.space
        }
        assert stated == searched, cells[0]
    assert seen >= {(mode, 1) for mode in MODES} | {("tf1", 0)}, "a mode without its row of ranges"


def test_the_saved_model_figures_are_those_of_a_fresh_export(tmp_path):
    """README: 'For latest-small (k = 5) the directory is X MiB: `saved_model.pb` Y kB, ... `variables/` Z kB'."""
    import wals2

    text = section("### Export")
    total = float(re.search(r"the directory is ([\d.]+) MiB", text).group(1)) * MIB
    pb = float(re.search(r"`saved_model.pb` (\d+) kB", text).group(1)) * KB
    variables = float(re.search(r"`variables/` (\d+) kB", text).group(1)) * KB
    ratings = wals2.load_bundled()
    train, _ = ratings.split(0.1, seed=0)
    model = wals2.WALSModel(ratings.num_users, ratings.num_items, latent_factors=5, seed=0)
    model.compile(jit_compile=False)
    model.fit(train, epochs=1, verbose=0)
    wals2.export_saved_model(model, str(tmp_path), top_k=10)
    sizes = {p.relative_to(tmp_path).as_posix(): p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()}
    measured = (
        sum(sizes.values()),
        sizes["saved_model.pb"],
        sum(v for k, v in sizes.items() if k.startswith("variables/")),
    )
    for stated, got in zip((total, pb, variables), measured, strict=True):
        assert abs(got - stated) <= 0.05 * got, (stated, got, sizes)  # 5 %: the README rounds


@pytest.mark.slow
def test_the_serving_answers_shown_are_those_of_the_readme_job(tmp_path):
    """README "HTTP server": the items and scores shown for user 1 and the unknown user 999999 are what the model of
    `python -m trainer.task --job-dir jobs/demo` answers (its `serving_default`, as the server calls it)."""
    import numpy as np
    import tensorflow as tf

    from trainer.task import main

    text = README[README.index("\n### HTTP server\n") :]  # (its shell comments start with "# ", as headings do)
    known = re.search(
        r'"item_ids": \["(\d+)", "(\d+)", \.\.\.\], "scores": \[([\d.]+), ([\d.]+), \.\.\.\], "known_user": true', text
    )
    unknown = re.search(
        r'"item_ids": \["(\d+)", "(\d+)", \.\.\.\], "scores": \[0.0, 0.0, \.\.\.\], "known_user": false', text
    )
    articles = re.search(r'TF1\'s app: \{"articles": \["(\d+)", "(\d+)", "(\d+)"\]\}', text)
    assert known and unknown and articles
    assert main(["--job-dir", str(tmp_path / "demo")]) == 0
    model = tf.saved_model.load(str(tmp_path / "demo" / "model"))
    out = model.signatures["serving_default"](user_id=tf.constant(["1", "999999"]))
    items = [[i.decode() for i in row] for row in out["item_ids"].numpy()[:, :3]]
    assert items[0] == list(articles.groups()) and items[0][:2] == list(known.groups()[:2])
    np.testing.assert_allclose(out["scores"].numpy()[0, :2], [float(x) for x in known.groups()[2:]], atol=0.005)
    assert items[1][:2] == list(unknown.groups()) and out["known_user"].numpy().tolist() == [True, False]
