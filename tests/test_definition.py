"""Challenge definition files: the shipped ones against their protocols, and every mistake named."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from flare_eval.cli.main import main
from flare_eval.definition import load_definition, preset_from_mapping, to_toml
from flare_eval.errors import EXIT_OK, EXIT_USAGE, ConfigError
from flare_eval.presets import FLARE23, PRESETS, LesionRules, get_preset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

TOY = '''\
name = "toy3"
title = "A three-label toy challenge"
lesion_label = 3
z_crop_labels = []
single_slice_z_crop = "keep"
nsd_dsc_threshold = 0.0
decimals = 4
both_empty_value = 1.0
one_empty_value = 0.0
missing_prediction = "fail"
out_of_map_labels = "background"
runtime_tolerance_s = 0.0
gpu_tolerance_mib = 0.0
failed_runtime_s = 600.0
failed_gpu_auc_mibs = 1000.0
tie_method = "min"
ranking_scheme = "flare"

[[classes]]
label = 1
name = "Kidney"
tolerance_mm = 2.0
group = "large"

[[classes]]
label = 2
name = "Vessel"
tolerance_mm = 1.0
group = "tubular"

[[classes]]
label = 3
name = "Tumor"
tolerance_mm = 1.0
group = "lesion"

[[ranking_metrics]]
name = "organ_dsc"
higher_is_better = true
weight = 1.0
aggregate = "mean"

[[ranking_metrics]]
name = "lesion_dsc"
higher_is_better = true
weight = 1.0
aggregate = "mean"

[lesions]
connectivity = 26
iou_threshold = 0.5
match = "iou"
'''


def test_flare23_is_the_protocol():
    """SPEC-flare23.md section 1 and 3, by hand."""
    tolerances = {c.name: c.tolerance_mm for c in FLARE23.classes}
    assert tolerances == {"Liver": 5, "RK": 3, "Spleen": 3, "Pancreas": 5, "Aorta": 2, "IVC": 2,
                          "RAG": 2, "LAG": 2, "Gallbladder": 2, "Esophagus": 3, "Stomach": 5,
                          "Duodenum": 7, "LK": 3, "Lesion": 2}
    assert FLARE23.labels == tuple(range(1, 15)) and FLARE23.lesion_label == 14
    assert FLARE23.z_crop_labels == (5, 6, 10) and FLARE23.nsd_dsc_threshold == 0.1
    assert (FLARE23.both_empty_value, FLARE23.one_empty_value, FLARE23.decimals) == (1.0, 0.0, 4)
    assert (FLARE23.runtime_tolerance_s, FLARE23.gpu_tolerance_mib) == (15.0, 4096.0)
    assert FLARE23.failed_gpu_auc_mibs == 16384 * 3600
    # six criteria of equal weight, the mean of all case x criterion ranks (section 6)
    assert [(m.name, m.higher_is_better, m.weight, m.aggregate) for m in FLARE23.ranking_metrics] == [
        ("organ_dsc", True, 1.0, "mean"), ("organ_nsd", True, 1.0, "mean"),
        ("lesion_dsc", True, 1.0, "mean"), ("lesion_nsd", True, 1.0, "mean"),
        ("runtime", False, 1.0, "mean"), ("gpu_auc", False, 1.0, "mean")]
    assert FLARE23.ranking_scheme == "flare" and FLARE23.tie_method == "min"
    assert [m.cap for m in FLARE23.ranking_metrics] == [None] * 6
    # the paper's lesion analysis: connected components (26, as panoptica), IoU > 0.5 (PQ)
    assert FLARE23.lesions == LesionRules(connectivity=26, iou_threshold=0.5, match="iou")
    # the March-2024 rule: only the threshold (and the name) differ
    later = PRESETS["flare23-2024"]
    assert later.nsd_dsc_threshold == 0.2
    assert later.with_overrides(name="flare23", title=FLARE23.title, nsd_dsc_threshold=0.1) == FLARE23


def test_flare22_is_its_scorers_rules():
    """FLARE22_DSC_NSD_Eval.py, read by hand: the 13 organs and tolerances of FLARE23 without
    the lesion, the same emptiness rules and z-crop, NSD whatever the DSC; efficiency: the
    2 GB tolerance and the 3600 s / full 16 GB GPU penalties."""
    flare22 = PRESETS["flare22"]
    assert flare22.classes == FLARE23.classes[:13] and flare22.lesion_label is None
    assert flare22.nsd_dsc_threshold == 0.0 and flare22.z_crop_labels == (5, 6, 10)
    assert flare22.gpu_tolerance_mib == 2048.0 and flare22.failed_runtime_s == 3600.0
    assert [m.name for m in flare22.ranking_metrics] == ["organ_dsc", "organ_nsd", "runtime", "gpu_auc"]


def test_every_mistake_is_named_once(tmp_path):
    bad = (TOY.replace("nsd_dsc_threshold = 0.0", "nsd_dsc_treshold = 0.0")
           .replace("label = 2\n", "label = 1\n")
           .replace("tolerance_mm = 1.0\ngroup = \"tubular\"", "tolerance_mm = 0.0\ngroup = \"tube\"")
           .replace("decimals = 4\n", ""))
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    with pytest.raises(ConfigError) as caught:
        load_definition(path)
    lines = caught.value.message.splitlines()
    assert lines[0] == f"challenge definition {path}: 6 problem(s):"
    assert sorted(lines[1:]) == sorted([
        "  - unknown key 'nsd_dsc_treshold' (did you mean 'nsd_dsc_threshold'?)",
        "  - missing key 'nsd_dsc_threshold'",
        "  - missing key 'decimals'",
        "  - classes #2: tolerance_mm must be positive, got 0.0",
        "  - classes #2: group must be one of ['large', 'small', 'tubular', 'lesion'], got 'tube'",
        "  - label 1 twice (classes #1, #2)",
    ])


def test_cross_item_mistakes(tmp_path):
    bad = TOY.replace("lesion_label = 3\n", "").replace("z_crop_labels = []", "z_crop_labels = [7]")
    path = tmp_path / "cross.toml"
    path.write_text(bad + '\n[[classes]]\nlabel = 4\nname = "Kidney"\ntolerance_mm = 1.0\ngroup = "small"\n')
    with pytest.raises(ConfigError) as caught:
        load_definition(path)
    message = caught.value.message
    assert "z_crop_labels: label 7 is not in the label map [1, 2, 3, 4]" in message
    assert "class name 'Kidney' twice" in message
    assert "ranking metric 'lesion_dsc' needs a lesion_label" in message
    (tmp_path / "x.toml").write_text("name = [")
    with pytest.raises(ConfigError, match=r"x\.toml: not valid TOML"):
        load_definition(tmp_path / "x.toml")
    with pytest.raises(ConfigError, match=r"unknown preset 'flare99'; shipped presets: \['flare22', "):
        get_preset("flare99")


@pytest.mark.parametrize(
    ("table", "problems"),
    [
        ("connectivity = 8\niou_threshold = 0.5\nmatch = \"iou\"",
         ["lesions: connectivity must be one of [6, 18, 26], got 8"]),
        ("connectivity = 26\niou_threshold = 1.0\nmatch = \"iou\"",
         ["lesions: iou_threshold must be in [0, 1) (a pair matches when IoU > threshold), got 1.0"]),
        ("connectivity = 26\niou_threshold = -0.1\nmatch = \"iou\"",
         ["lesions: iou_threshold must be in [0, 1) (a pair matches when IoU > threshold), got -0.1"]),
        ("connectivity = 26\niou_threshold = 0.5\nmatch = \"dice\"",
         ["lesions: match must be one of ['iou', 'overlap'], got 'dice'"]),
        ("connectivity = 26\niou_treshold = 0.5\nmatch = \"iou\"",
         ["lesions: unknown key 'iou_treshold' (did you mean 'iou_threshold'?)",
          "lesions: missing key 'iou_threshold'"]),
        (None, ["missing table [lesions] (connectivity, iou_threshold, match): lesion_label is set"]),
    ],
)
def test_lesion_rule_mistakes(table, problems, tmp_path):
    text = TOY.split("\n[lesions]")[0] + ("" if table is None else f"\n[lesions]\n{table}\n")
    (tmp_path / "l.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_definition(tmp_path / "l.toml")
    assert caught.value.message.splitlines()[1:] == [f"  - {p}" for p in problems]


def test_lesion_rules_need_a_lesion_label_and_merge_with_a_base(tmp_path):
    no_label = TOY.replace("lesion_label = 3\n", "").split("[[ranking_metrics]]\nname = \"lesion_dsc\"")[0]
    (tmp_path / "n.toml").write_text(no_label + "\n[lesions]\nconnectivity = 6\n"
                                     "iou_threshold = 0.5\nmatch = \"iou\"\n")
    with pytest.raises(ConfigError) as caught:
        load_definition(tmp_path / "n.toml")
    assert caught.value.message.splitlines()[1:] == ["  - [lesions] needs a lesion_label"]
    # the same rule for a preset built in Python
    with pytest.raises(ConfigError, match="lesion rules without a lesion label"):
        FLARE23.with_overrides(lesion_label=None)
    # a base's table is merged key by key: only the threshold changes
    (tmp_path / "b.toml").write_text('base = "flare23"\nname = "b"\n[lesions]\niou_threshold = 0.3\n')
    assert load_definition(tmp_path / "b.toml").lesions == LesionRules(26, 0.3, "iou")


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ('out_of_map_labels = "background"\n', 'out_of_map_labels = "zero"\n',
         "out_of_map_labels must be one of ['background', 'zero_case'], got 'zero'"),
        ('out_of_map_labels = "background"\n', "", "missing key 'out_of_map_labels'"),
    ],
)
def test_out_of_map_rule_mistakes(old, new, problem, tmp_path):
    (tmp_path / "o.toml").write_text(TOY.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_definition(tmp_path / "o.toml")
    assert caught.value.message.splitlines()[1:] == [f"  - {problem}"]
    # the rule is part of the content: its hash moves with it
    (tmp_path / "z.toml").write_text(TOY.replace('"background"', '"zero_case"'))
    (tmp_path / "b.toml").write_text(TOY)
    assert load_definition(tmp_path / "z.toml").content_sha256 != load_definition(
        tmp_path / "b.toml").content_sha256
    # the same check for a preset built in Python
    with pytest.raises(ConfigError, match="out_of_map_labels must be one of"):
        FLARE23.with_overrides(out_of_map_labels="drop")


def test_organ_criteria_need_an_organ_class(tmp_path):
    """A lesion class alone (FLARE24 task 1) has no organ mean to rank on."""
    only_lesion = TOY.split("[[classes]]")[0] + TOY[TOY.index("[[classes]]\nlabel = 3"):]
    (tmp_path / "l.toml").write_text(only_lesion)
    with pytest.raises(ConfigError) as caught:
        load_definition(tmp_path / "l.toml")
    assert caught.value.message.splitlines()[1:] == [
        "  - ranking metric 'organ_dsc' needs an organ class (a class other than the lesion_label)"]


def test_flare24_presets_are_their_scorers_rules():
    """T1_FLARE24_DSC_NSD_Eval.py and T2andT3_FLARE24_DSC_NSD_Eval.py, read by hand: task 1 one
    binary lesion class (2 mm), no crop, DSC < 0.2 -> NSD 0, a prediction above 1 zeroes the
    case; tasks 2 and 3 FLARE22's 13 organs, tolerances and z-crop with DSC < 0.2 -> NSD 0,
    values above 13 ignored.  Efficiency.py is FLARE23's harness: flare23's tolerances."""
    task1, task2 = PRESETS["flare24-task1"], PRESETS["flare24-task2"]
    assert [(c.label, c.name, c.tolerance_mm) for c in task1.classes] == [(1, "Lesion", 2.0)]
    assert task1.lesion_label == 1 and task1.organ_labels == () and task1.z_crop_labels == ()
    assert (task1.nsd_dsc_threshold, task1.out_of_map_labels) == (0.2, "zero_case")
    assert [m.name for m in task1.ranking_metrics] == ["lesion_dsc", "lesion_nsd", "runtime", "gpu_auc"]
    assert task2.classes == PRESETS["flare22"].classes and task2.lesion_label is None
    assert task2.z_crop_labels == (5, 6, 10)
    assert (task2.nsd_dsc_threshold, task2.out_of_map_labels) == (0.2, "background")
    for preset in (task1, task2):
        assert (preset.runtime_tolerance_s, preset.gpu_tolerance_mib) == (15.0, 4096.0)
        assert (preset.failed_runtime_s, preset.failed_gpu_auc_mibs) == (3600.0, 16384 * 3600)
        assert (preset.both_empty_value, preset.one_empty_value, preset.decimals) == (1.0, 0.0, 4)
    assert FLARE23.out_of_map_labels == PRESETS["flare22"].out_of_map_labels == "background"


ORGAN = 'name = "organ_dsc"\nhigher_is_better = true\nweight = 1.0\naggregate = "mean"\n'


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("weight = 1.0\naggregate", "weight = 0.0\naggregate",
         "ranking_metrics #1: weight must be positive, got 0.0"),
        ("weight = 1.0\naggregate", "aggregate",
         "ranking_metrics #1: missing key 'weight'"),
        ('aggregate = "mean"', 'aggregate = "mode"',
         "ranking_metrics #1: aggregate must be one of ['mean', 'median'], got 'mode'"),
        ('aggregate = "mean"', 'aggregate = "median"',
         "ranking metric 'organ_dsc': aggregate 'median' needs scheme rank-then-aggregate or "
         "aggregate-then-rank, not 'flare'"),
        ('aggregate = "mean"\n', 'aggregate = "mean"\nfloor = 0.9\ncap = 0.95\n',
         "ranking metric 'organ_dsc': cap 0.95 must lie below its floor 0.9 (the cap is the "
         "worst value counted)"),
        ('aggregate = "mean"\n', 'aggregate = "mean"\ncap = true\n',
         "ranking_metrics #1: cap must be a number, got True"),
    ],
)
def test_ranking_criterion_mistakes(old, new, problem, tmp_path):
    (tmp_path / "r.toml").write_text(TOY.replace(ORGAN, ORGAN.replace(old, new)))
    with pytest.raises(ConfigError) as caught:
        load_definition(tmp_path / "r.toml")
    assert caught.value.message.splitlines()[1:] == [f"  - {problem}"]


def test_ranking_scheme_and_runtime_cap_mistakes(tmp_path):
    (tmp_path / "s.toml").write_text(TOY.replace('ranking_scheme = "flare"', 'ranking_scheme = "borda"'))
    with pytest.raises(ConfigError) as caught:
        load_definition(tmp_path / "s.toml")
    assert caught.value.message.splitlines()[1:] == [
        "  - ranking_scheme must be one of ['flare', 'rank-then-aggregate', 'aggregate-then-rank', "
        "'test-then-rank'], got 'borda'"]
    # the runtime floor is runtime_tolerance_s: a cap under it is refused
    runtime = ('\n[[ranking_metrics]]\nname = "runtime"\nhigher_is_better = false\nweight = 1.0\n'
               'aggregate = "mean"\ncap = 10.0\n')
    (tmp_path / "t.toml").write_text(TOY.replace("runtime_tolerance_s = 0.0", "runtime_tolerance_s = 15.0")
                                     .replace("\n[lesions]", runtime + "\n[lesions]"))
    with pytest.raises(ConfigError) as caught:
        load_definition(tmp_path / "t.toml")
    assert caught.value.message.splitlines()[1:] == [
        "  - ranking metric 'runtime': cap 10.0 must lie above its floor 15.0 (the cap is the "
        "worst value counted)"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shown_and_recorded_forms_read_back_equal(name, tmp_path):
    preset = PRESETS[name]
    (tmp_path / "shown.toml").write_text(to_toml(preset))
    assert load_definition(tmp_path / "shown.toml") == preset
    recorded = json.loads(json.dumps(preset.describe()))
    assert preset_from_mapping(recorded, where="run.json") == preset
    recorded["nsd_dsc_threshold"] = 0.3
    with pytest.raises(ConfigError, match="does not match its content"):
        preset_from_mapping(recorded, where="run.json")


def test_content_hash_ignores_layout_and_follows_rules(tmp_path):
    (tmp_path / "a.toml").write_text(TOY)
    (tmp_path / "b.toml").write_text("# comments and order do not matter\n" + "\n".join(
        reversed(TOY.split("\n[[classes]]")[0].splitlines())) + "\n[[classes]]" + TOY.split("\n[[classes]]", 1)[1])
    a, b = load_definition(tmp_path / "a.toml"), load_definition(tmp_path / "b.toml")
    assert a.content_sha256 == b.content_sha256
    assert a.with_overrides(nsd_dsc_threshold=0.1).content_sha256 != a.content_sha256


def test_presets_verb_lists_and_shows(capsys, tmp_path):
    assert main(["presets"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["flare22", "flare23", "flare23-2024", "flare24-task1",
                                                 "flare24-task2", "flare24-task3"]
    assert out[1].split()[1] == FLARE23.content_sha256[:12]
    assert main(["presets", "show", "flare22"]) == EXIT_OK
    (tmp_path / "shown.toml").write_text(capsys.readouterr().out)
    assert load_definition(tmp_path / "shown.toml") == PRESETS["flare22"]
    (tmp_path / "bad.toml").write_text(TOY.replace("tolerance_mm = 2.0", "tolerance_mm = -1.0"))
    assert main(["presets", "show", str(tmp_path / "bad.toml")]) == EXIT_USAGE
    assert "classes #1: tolerance_mm must be positive, got -1.0" in capsys.readouterr().err


@pytest.mark.parametrize("doc", ["docs/conventions.md", "docs/lesions.md"])
def test_the_docs_lesion_rules_are_flare23s_file(doc):
    """The guides quote flare23's [lesions] table; the file is the rules' one source, so the
    quote must equal it (read here from the TOML itself, not through flare-eval)."""
    table = tomllib.loads((ROOT / "flare_eval" / "challenges" / "flare23.toml").read_text())["lesions"]
    text = " ".join((ROOT / doc).read_text().split())  # lines unwrapped
    quoted = re.findall(r'flare23: `connectivity = (\d+)`, `iou_threshold = ([\d.]+)`, '
                        r'`match = "(\w+)"`', text)
    assert quoted == [(str(table["connectivity"]), str(table["iou_threshold"]), table["match"])]
