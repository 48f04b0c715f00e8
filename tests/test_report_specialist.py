"""The R2GenGPT-style report specialist: report cleaning (on the real IU-Xray reports), model, checkpoints."""

import json

import pytest

from conftest import shared_path
from gsco.specialists.report.clean import clean_report


@pytest.fixture(scope="module")
def iu_reports() -> dict[str, str]:
    data = json.loads(shared_path("data", "iu_xray", "annotation.json").read_text())
    return {r["id"]: r["report"] for split in data.values() for r in split}


# Hand-checked against R2Gen's rules: numbering dropped (also the "1. " inside "L1. A" — R2Gen's own quirk),
# doubled dots collapsed, punctuation and the ':'..'[' range (so '<', '>', '[') removed, hyphens kept, an empty
# sentence kept.
IU_CASES = {
    "CXR3260_IM-1547": "cardiomegaly andor pericardial effusion . right base opacity xxxx combination of pleural "
                       "effusion and atelectasisairspace disease . cannot exclude elevation right hemidiaphragm . "
                       "left lung relatively clear . limited exam due to underpenetrated technique related to large "
                       "patient habitus . no evidence of pneumothorax .",
    "CXR3368_IM-1620-0001": "the trachea is midline . the cardiomediastinal silhouette is normal . low lung volumes "
                            "causing mild bronchovascular crowding . no focal airspace consolidation is seen . there "
                            "is no pleural effusion . there is no large pneumothorax . visualized bony structures "
                            "reveal no acute abnormalities . pression low lung volumes without acute cardiopulmonary "
                            "findings .  .",
    "CXR2192_IM-0802": "no focal lung consolidation . no pneumothorax or pleural effusionheart size and pulmonary "
                       "vascularity are within normal limitsminimal degenerative changes of the thoracic spine . the "
                       "previouslybrdescribed xxxx deformity in the midthoracic spine is again seen . there is "
                       "subcutaneous shunt catheter tubing along the anterior chest wall .",
    "CXR2542_IM-1053": "the xxxx examination consists of frontal and lateral radiographs of the chest . the "
                       "cardiomediastinal contours are within normal limits . pulmonary vascularity is within normal "
                       "limits . no focal consolidation pleural effusion or pneumothorax identified . the visualized "
                       "osseous structures and upper abdomen are unremarkable .",
    "CXR3038_IM-1411": "the heart and mediastinum are unremarkable . there is a calcified granuloma within the left "
                       "upper lobe . the lungs are clear without infiltrate . there is no effusion or pneumothorax . "
                       "there are acute mild anterior xxxx deformities identified at l1-l2 . there is retropulsion of "
                       "the posterior vertebral body of la ct of the lumbar spine was already ordered at the time of "
                       "this dictation .",
    "CXR1647_IM-0424": "the lungs are clear bilaterally . specifically no evidence of focal consolidation "
                       "pneumothorax or pleural effusion . cardio mediastinal silhouette is unremarkable . visualized "
                       "osseous structures of the thorax are without acute abnormality .",
}


@pytest.mark.parametrize("study", sorted(IU_CASES))
def test_iu_xray_cleaning_matches_hand_checked_reports(iu_reports, study):
    assert clean_report(iu_reports[study], "iu_xray") == IU_CASES[study]


def test_every_real_iu_xray_report_cleans_to_lower_case_sentences(iu_reports):
    assert len(iu_reports) == 2955
    for report in iu_reports.values():
        cleaned = clean_report(report)
        assert cleaned.endswith(" .") and cleaned == cleaned.lower()
        assert not set(cleaned) & set(",;:()[]<>\"'/")


def test_mimic_cxr_cleaning_keeps_colons_and_hyphens():
    report = "FINDINGS:\n1. Low lung volumes..  2. No  effusion (left) or pneumo-thorax __ seen. \nIMPRESSION: none"
    assert clean_report(report, "mimic_cxr") == \
        "findings : low lung volumes . no effusion left or pneumo-thorax  seen . impression : none ."
    with pytest.raises(ValueError, match="'chexpert' is not one of iu_xray, mimic_cxr"):
        clean_report("x", "chexpert")
