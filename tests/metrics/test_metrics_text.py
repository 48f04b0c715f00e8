"""Report metrics equal pycocoevalcap's own scorers; answer parsing, diagnosis and VQA scores."""

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from gsco.data.registry import labels_phrase
from gsco.metrics.answers import (
    closed_correct,
    diagnosis_metrics,
    mentioned_options,
    multilabel_metrics,
    open_recall,
    parse_option,
    parse_options,
    vqa_metrics,
)
from gsco.metrics.report import report_metrics

from conftest import shared_path


@pytest.fixture(scope="module")
def reports():
    test = json.loads(shared_path("data", "iu_xray", "annotation.json").read_text())["test"][:40]
    refs = {r["id"]: r["report"] for r in test}
    ids = list(refs)
    # Hypotheses: other studies' reports (realistic, partly overlapping wording), one exact copy.
    hyps = {k: refs[ids[(i + 1) % len(ids)]] for i, k in enumerate(ids)}
    hyps[ids[0]] = refs[ids[0]]
    return refs, hyps


@pytest.fixture(scope="module")
def meteor():
    """pycocoevalcap's METEOR scorer called directly (its own Java process, apart from the one ours keeps)."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    yield scorer
    scorer.meteor_p.kill()
    scorer.meteor_p.wait()


@pytest.mark.e2e
def test_report_metrics_equal_pycocoevalcap_scorers_on_the_same_tokens(reports, meteor):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs, hyps = reports
    ours = report_metrics(refs, hyps, tokenize="ptb", meteor=True)
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": v}] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in hyps.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {f"BLEU_{i}": b for i, b in enumerate(bleu, 1)}
    expected["METEOR"] = meteor.compute_score(gts, res)[0]
    expected["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]
    assert ours.keys() == expected.keys()
    for key in expected:
        assert ours[key] == pytest.approx(expected[key], abs=1e-12), key
    assert 0 < ours["BLEU_4"] < ours["BLEU_1"] < 1
    # one METEOR process per Python process: the next call (a report ablation's next arm) reuses it
    from gsco.metrics.report import _meteor

    first = _meteor["scorer"].meteor_p.pid
    assert report_metrics(refs, hyps, tokenize="ptb", meteor=True) == ours
    assert _meteor["scorer"].meteor_p.pid == first


@pytest.mark.e2e
def test_untokenized_scoring_and_perfect_predictions(reports):
    refs, _ = reports
    lower = {k: v.lower() for k, v in refs.items()}
    perfect = report_metrics(lower, lower, tokenize="none", meteor=False)
    assert perfect["BLEU_4"] == pytest.approx(1.0, abs=1e-6) and perfect["ROUGE_L"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="different ids"):
        report_metrics({"a": "x"}, {"b": "x"}, meteor=False)


@pytest.mark.parametrize("answer, expected", [
    ("The diagnosis is Tumor.", "tumor"),
    ("normal tissue, no tumor", "normal"),          # first mentioned wins
    ("This is non-tumor tissue", "non-tumor"),      # the longer option, not the 'tumor' inside it
    ("tumorous growth", None),                      # whole words only
    ("I cannot tell.", None),
])
def test_parse_option(answer, expected):
    assert parse_option(answer, ["normal", "tumor", "non-tumor"]) == expected


def test_mentioned_options_for_multi_label():
    assert mentioned_options("Effusion and atelectasis; also effusion.", ["atelectasis", "effusion", "mass"]) \
        == ["effusion", "atelectasis"]


def test_diagnosis_metrics_match_sklearn_with_unparsed_counted_wrong():
    options = ["a", "b", "c"]
    truth = ["a", "b", "c", "a", "b", "c", "a"]
    pred = ["a", "b", "b", None, "b", "c", "c"]
    m = diagnosis_metrics(truth, pred, options)
    y = [options.index(t) for t in truth]
    p = [options.index(q) if q else 3 for q in pred]
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, labels=[0, 1, 2], average="macro"))
    assert m["unparsed"] == 1 and m["per_class_recall"] == {"a": 1 / 3, "b": 1.0, "c": 0.5}
    assert np.array(m["confusion"]).shape == (3, 4)
    with pytest.raises(ValueError, match=r"\['d'\] are not among the options"):
        diagnosis_metrics(["d"], ["a"], options)


def test_multilabel_parsing_names_every_option_or_no_finding():
    options = ["atelectasis", "effusion", "mass"]
    assert parse_options("Effusion and atelectasis.", options) == ["effusion", "atelectasis"]
    assert parse_options("No finding.", options) == []
    assert parse_options("I cannot tell.", options) is None
    assert labels_phrase(["effusion", "mass"]) == "effusion and mass" and labels_phrase([]) == "no finding"
    assert parse_options(labels_phrase(["mass", "effusion"]), options) == ["mass", "effusion"]


def test_multilabel_metrics():
    truth = [["x"], ["x", "y"], ["y"], [], []]
    pred = [["x"], ["x"], None, [], ["y"]]
    m = multilabel_metrics(truth, pred, ["x", "y"])
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [0, 0]])
    p = np.array([[1, 0], [1, 0], [0, 0], [0, 0], [0, 1]])
    assert m["accuracy"] == pytest.approx(2 / 5) and m["unparsed"] == 1
    assert m["per_class_recall"] == {"x": 1.0, "y": 0.0}
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["micro_f1"] == pytest.approx(f1_score(y, p, average="micro"))
    # co-occurrence: rows x, y, no finding; columns x, y, no finding, unparsed
    assert m["confusion"] == [[2, 0, 0, 0], [1, 0, 0, 1], [0, 1, 1, 0]]
    with pytest.raises(ValueError, match=r"\['q'\] are not among the options"):
        multilabel_metrics([["q"]], [[]], ["x", "y"])


def test_vqa_scores():
    assert closed_correct("Yes, there is an effusion.", "yes")
    assert not closed_correct("No. Yes would be wrong.", "yes")
    assert closed_correct("It is on the left side", "left side")
    assert open_recall("The right lower lobe", "right lung lobe") == pytest.approx(2 / 3)
    m = vqa_metrics(["yes", "no", "a lung"], ["yes", "yes", "lung"])
    assert (m["n_closed"], m["n_open"], m["closed_accuracy"], m["open_recall"]) == (2, 1, 0.5, 1.0)


def test_untokenized_scoring_feeds_the_scorers_the_strings_r2gengpt_feeds_them():
    """R2Gen's cleaning keeps empty sentences ("a .  . b ."); R2GenGPT hands such strings to the scorers as they are,
    and ROUGE-L splits on single spaces, so the double space counts. Scores equal the scorers called directly."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    from gsco.specialists.report.clean import clean_report

    refs = {"1": clean_report("The heart is normal. . Lungs are clear."),
            "2": clean_report("No effusion.. . No pneumothorax."),
            "3": "the heart is normal in size . the lungs are clear ."}
    hyps = {"1": "the heart is normal . lungs are clear .", "2": "no effusion .  . no pneumothorax .",
            "3": "the heart is normal  in size . lungs clear ."}
    assert "  " in refs["1"] and "  " in refs["2"]  # empty sentences leave double spaces
    ours = report_metrics(refs, hyps, tokenize="none", meteor=False)
    gts, res = {k: [v] for k, v in refs.items()}, {k: [v] for k, v in hyps.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert ours["BLEU_4"] == pytest.approx(bleu[3], abs=1e-12)
    assert ours["ROUGE_L"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)
    assert ours["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)
    collapsed = ({k: [" ".join(v[0].split())] for k, v in gts.items()},
                 {k: [" ".join(v[0].split())] for k, v in res.items()})
    assert Rouge().compute_score(*collapsed)[0] != pytest.approx(ours["ROUGE_L"], abs=1e-6)  # collapsing would differ


@pytest.mark.e2e
def test_a_report_with_line_breaks_is_scored_as_r2gengpt_scores_it_and_clean_text_is_unchanged(reports, meteor):
    """report_tokenize=none (the report specialist's default) with a generalist's multi-line answer: pycocoevalcap's
    METEOR wrapper breaks its line protocol on the newline (a ValueError, or a hang); R2GenGPT's collapses whitespace
    first. Ours
    equals the scorers called directly on the text with each line break made one space (METEOR: all whitespace
    collapsed), and clean text scores exactly as pycocoevalcap scores it."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs, hyps = (dict(list(d.items())[:8]) for d in reports)
    keys = sorted(refs)
    hyps_broken = dict(hyps)
    hyps_broken[keys[1]] = "Findings:\n" + hyps[keys[1]].replace(". ", ".\n\n", 2)
    hyps_broken[keys[2]] = hyps[keys[2]] + " \n"

    scorer = meteor

    def direct(h, with_meteor=True):
        gts, res = {k: [refs[k]] for k in keys}, {k: [h[k]] for k in keys}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        m = scorer.compute_score(gts, res)[0] if with_meteor else None
        return {**{f"BLEU_{i}": b for i, b in enumerate(bleu, 1)}, "METEOR": m,
                "ROUGE_L": Rouge().compute_score(gts, res)[0], "CIDEr": Cider().compute_score(gts, res)[0]}

    # (METEOR on clean text: the PTB test above)
    clean = {k: v for k, v in direct(hyps, with_meteor=False).items() if k != "METEOR"}
    assert report_metrics(refs, hyps, tokenize="none", meteor=False) == pytest.approx(clean, abs=1e-12)
    ours = report_metrics(refs, hyps_broken, tokenize="none")
    # each line break, with the spaces around it, one space: what the two answers read as on one line
    expected = direct({**hyps, keys[1]: "Findings: " + hyps[keys[1]], keys[2]: hyps[keys[2]] + " "})
    assert ours == pytest.approx(expected, abs=1e-12)


# Answers as a generalist writes them (sentences, synonyms, negations, hedges), for every registered diagnosis
# dataset, with the option each gives (None: unparsed; a list: multi-label).
NATURAL_ANSWERS = {
    "breastmnist": [("benign.", "normal or benign"), ("Benign, not malignant.", "normal or benign"),
                    ("It is not malignant.", "normal or benign"), ("The lesion appears malignant.", "malignant"),
                    ("Findings are suspicious for carcinoma.", "malignant"), ("No evidence of malignancy.",
                    "normal or benign"), ("It could be benign or malignant.", None), ("I cannot tell.", None),
                    ("Malignancy is unlikely; this looks like a benign lesion.", "normal or benign"),
                    ("Cannot exclude malignancy.", "malignant"), ("Malignancy cannot be ruled out.", "malignant")],
    "pneumoniamnist": [("There is no pneumonia.", "normal"), ("Findings consistent with pneumonia.", "pneumonia"),
                       ("The lungs are clear; this is a normal chest X-ray.", "normal")],
    "pcam200": [("Metastatic tumour cells are present.", "tumor"), ("No tumor is seen in this patch.", "normal"),
                ("This is normal lymph node tissue.", "normal")],
    "nodulemnist3d": [("The nodule is most likely malignant.", "malignant"), ("A benign nodule.", "benign"),
                      ("Not cancerous.", "benign")],
    "cbis_ddsm_calc": [("These calcifications are benign.", "benign"), ("Suspicious for cancer.", "malignant")],
    "cbis_ddsm_mass": [("malignant mass", "malignant"), ("Non-cancerous mass.", "benign")],
    "adrenalmnist3d": [("Adrenal hyperplasia.", "hyperplasia"), ("The adrenal gland is normal.", "normal"),
                       ("There is no hyperplasia.", "normal")],
    "vesselmnist3d": [("An aneurysm is present.", "aneurysm"), ("No aneurysm.", "vessel")],
    "synapsemnist3d": [("This is an excitatory synapse.", "excitatory synapse"),
                       ("Inhibitory.", "inhibitory synapse")],
    "fmc_colon": [("Tumour tissue.", "tumor"), ("Non-tumor mucosa.", "non-tumor"), ("There is no tumor.",
                  "non-tumor")],
    "octmnist": [("The scan shows drusen.", "drusen"), ("Wet AMD with CNV.", "choroidal neovascularization"),
                 ("Diabetic macular oedema is present.", "diabetic macular edema"), ("A healthy retina.", "normal")],
    "retoct": [("Age-related macular degeneration.", "AMD"), ("There is a macular hole.", "MH"),
               ("Central serous chorioretinopathy.", "CSR"), ("Normal.", "NORMAL")],
    "dermamnist": [("This lesion is a melanoma.", "melanoma"), ("A benign nevus.", "melanocytic nevi"),
                   ("Seborrheic keratosis.", "benign keratosis-like lesions"), ("It is not a melanoma but a mole.",
                   "melanocytic nevi"), ("Basal cell carcinoma (BCC).", "basal cell carcinoma"),
                   ("Probably an angioma.", "vascular lesions")],
    "ham10000": [("Actinic keratosis.", "actinic keratoses and intraepithelial carcinoma"),
                 ("Dermatofibroma.", "dermatofibroma")],
    "pathmnist": [("The patch shows adipose tissue.", "adipose"), ("Colorectal adenocarcinoma.",
                  "colorectal adenocarcinoma epithelium"), ("Tumor stroma.", "cancer-associated stroma"),
                  ("Normal colonic mucosa.", "normal colon mucosa"), ("Mostly lymphocytes.", "lymphocytes")],
    "bloodmnist": [("This is a neutrophil.", "neutrophil"), ("Platelets.", "platelet"),
                   ("An immature granulocyte (myelocyte).",
                    "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)"),
                   ("It is an erythroblast, not a lymphocyte.", "erythroblast")],
    "tissuemnist": [("Proximal tubule.", "Proximal Tubule Segments"), ("These are podocytes.", "Podocytes"),
                    ("A collecting duct.", "Collecting Duct, Connecting Tubule"),
                    ("Loop of Henle (thick ascending limb).", "Thick Ascending Limb")],
    "organamnist": [("The left kidney.", "kidney-left"), ("This slice shows the liver.", "liver"),
                    ("Urinary bladder.", "bladder")],
    "organcmnist": [("Right femur.", "femur-right"), ("The spleen.", "spleen")],
    "organsmnist": [("Left lung.", "lung-left"), ("It is the pancreas, not the liver.", "pancreas")],
    "organmnist3d": [("The heart.", "heart"), ("Right kidney.", "kidney-right")],
    "fracturemnist3d": [("A displaced rib fracture.", "displaced rib fracture"),
                        ("Non-displaced rib fracture.", "nondisplaced rib fracture"),
                        ("Buckle fracture of the rib.", "buckle rib fracture")],
    "retinamnist": [("Moderate diabetic retinopathy.", "2"), ("No diabetic retinopathy.", "0"),
                    ("Grade 4: proliferative.", "4"), ("Mild non-proliferative diabetic retinopathy.", "1")],
    "wce": [("Ulcerative colitis.", "ulcerative colitis"), ("A polyp is seen.", "polyps"),
            ("Oesophagitis.", "esophagitis"), ("Normal mucosa.", "normal")],
    "chestmnist": [("Cardiomegaly with a small left pleural effusion.", ["cardiomegaly", "effusion"]),
                   ("No pneumothorax, effusion or consolidation.", []), ("no finding", []),
                   ("There is an enlarged heart but no effusion.", ["cardiomegaly"]),
                   ("Pulmonary oedema and bilateral infiltrates.", ["edema", "infiltration"]),
                   ("The image shows a chest X-ray.", None)],
    "fmc_endo": [("Two polyps and an ulcer.", ["polyp", "ulcer"]), ("No erosion.", []),
                 ("Ulceration without tumour.", ["ulcer"])],
}


def test_every_registered_diagnosis_dataset_has_natural_answers_in_the_table():
    from gsco.data.registry import list_datasets

    assert sorted(NATURAL_ANSWERS) == list_datasets(usable_only=True)


@pytest.mark.parametrize("dataset", sorted(NATURAL_ANSWERS))
def test_natural_answers_are_read_as_a_person_reads_them(dataset):
    from gsco.data.registry import answer_aliases, get_dataset_info

    info = get_dataset_info(dataset)
    options = list(info.label_names)
    aliases = answer_aliases(options)  # found from the options alone, as a metafile's are
    assert aliases == answer_aliases(options, dataset)
    for answer, expected in NATURAL_ANSWERS[dataset]:
        got = parse_options(answer, options, aliases=aliases) if info.multi_label \
            else parse_option(answer, options, aliases)
        assert got == expected, (dataset, answer, got)


def test_literal_parsing_keeps_the_earlier_rule():
    options = ["malignant", "normal or benign"]
    assert parse_option("Benign, not malignant.", options, mode="literal") == "malignant"
    assert parse_option("benign.", options, mode="literal") is None
    assert parse_options("No effusion.", ["effusion", "mass"], mode="literal") == ["effusion"]
