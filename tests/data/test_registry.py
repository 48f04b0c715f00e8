import pytest
import yaml

from gsco.data.registry import TASK_TYPES, DatasetError, get_dataset_info, list_datasets

MEDMNIST_2D = {  # name: (task, classes, channels, train, val, test): the files MedMNIST distributes (medmnist 3.x)
    "pathmnist": ("multi-class", 9, 3, 89996, 10004, 7180),
    "chestmnist": ("multi-label, binary-class", 14, 1, 78468, 11219, 22433),
    "dermamnist": ("multi-class", 7, 3, 7007, 1003, 2005),
    "octmnist": ("multi-class", 4, 1, 97477, 10832, 1000),
    "pneumoniamnist": ("binary-class", 2, 1, 4708, 524, 624),
    "retinamnist": ("ordinal-regression", 5, 3, 1080, 120, 400),
    "breastmnist": ("binary-class", 2, 1, 546, 78, 156),
    "bloodmnist": ("multi-class", 8, 3, 11959, 1712, 3421),
    "tissuemnist": ("multi-class", 8, 1, 165466, 23640, 47280),
    "organamnist": ("multi-class", 11, 1, 34561, 6491, 17778),  # the v2 paper: 34581 train
    "organcmnist": ("multi-class", 11, 1, 12975, 2392, 8216),  # the paper: 13000, 8268 test
    "organsmnist": ("multi-class", 11, 1, 13932, 2452, 8827),  # the paper: 13940, 8829 test
}
EXTRA = {"pcam200", "retoct", "ham10000", "dermnet", "derm7pt", "cbis_ddsm_calc", "cbis_ddsm_mass", "vindr_spinexr",
         "vindr_pcxr", "vindr_mammo", "brset", "fmc_colon", "fmc_chest", "fmc_endo", "wce"}


MEDMNIST_3D = {"organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d", "synapsemnist3d"}


def test_registry_holds_medmnist_and_the_gsco_extras():
    assert set(list_datasets()) == set(MEDMNIST_2D) | MEDMNIST_3D | EXTRA


@pytest.mark.parametrize("name", sorted(set(MEDMNIST_2D) | MEDMNIST_3D))
def test_medmnist_entries_equal_the_medmnist_packages_table(name):
    """Task, classes, channels, split sizes (and the 3D sets' label names) as medmnist.INFO states them."""
    from medmnist.info import INFO

    ref, info = INFO[name], get_dataset_info(name)
    assert (info.task, info.num_classes, info.n_channels) == (ref["task"], len(ref["label"]), ref["n_channels"])
    assert info.n_samples == ref["n_samples"] and info.dims == (3 if name in MEDMNIST_3D else 2)
    if name in MEDMNIST_3D:
        assert list(info.label_names) == [ref["label"][str(i)] for i in range(len(ref["label"]))]


@pytest.mark.parametrize("name", sorted(MEDMNIST_2D))
def test_medmnist_entries(name):
    task, classes, channels, *sizes = MEDMNIST_2D[name]
    info = get_dataset_info(name)
    assert (info.task, info.num_classes, info.n_channels) == (task, classes, channels)
    assert info.n_samples == dict(zip(("train", "val", "test"), sizes))
    assert all("," not in n for n in info.label_names if name != "tissuemnist" and name != "bloodmnist")


@pytest.mark.parametrize("name", list_datasets())
def test_every_entry_is_usable_or_says_what_is_missing(name):
    try:
        info = get_dataset_info(name)
    except DatasetError as exc:
        assert "label_names are not known" in str(exc) and "extra_datasets" in str(exc)
        return
    assert info.task in TASK_TYPES
    assert len(info.label_names) == len(set(info.label_names)) >= 2
    if info.task == "binary-class":
        assert info.num_classes == 2


def test_user_file_completes_and_adds_datasets(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text(yaml.safe_dump({
        "dermnet": {"label_names": [f"class {i}" for i in range(23)]},
        "my_xray": {"task": "binary-class", "label_names": ["normal", "pneumothorax"], "format": "metafile",
                    "metafiles": {"train": "train.csv", "val": "val.csv", "test": "test.csv"}},
    }))
    dermnet = get_dataset_info("dermnet", user)
    assert dermnet.task == "multi-class" and dermnet.num_classes == 23  # task kept from the built-in entry
    mine = get_dataset_info("my_xray", user)
    assert mine.format == "metafile" and mine.label_names == ("normal", "pneumothorax")
    assert "my_xray" in list_datasets(user) and "my_xray" not in list_datasets()


@pytest.mark.parametrize("entry, message", [
    ({"task": "classification", "label_names": ["a", "b"]}, "task 'classification' is not one of"),
    ({"task": "binary-class", "label_names": ["a", "b", "c"]}, "exactly 2 label names"),
    ({"task": "multi-class", "label_names": ["a", "a"]}, "duplicates"),
    ({"task": "multi-class", "label_names": ["a", "b"], "colour": 1}, "unknown field(s) ['colour']"),
    ({"task": "multi-class", "label_names": ["a", "b"], "format": "metafile"}, "needs metafiles"),
    ({"task": "multi-class", "label_names": ["a", "b"], "n_channels": 4}, "n_channels must be 1 or 3"),
])
def test_bad_entries_are_named(tmp_path, entry, message):
    user = tmp_path / "bad.yaml"
    user.write_text(yaml.safe_dump({"broken": entry}))
    with pytest.raises(DatasetError) as err:
        get_dataset_info("broken", user)
    assert message in str(err.value) and "broken" in str(err.value)


def test_unknown_dataset_lists_the_registered_ones():
    with pytest.raises(DatasetError, match=r"unknown dataset 'pathmnst' \(did you mean 'pathmnist'\?\); registered: "):
        get_dataset_info("pathmnst")


def test_the_docs_name_every_registered_dataset_and_arm():
    """The lists in the docs follow the registries: DATASET.md names every dataset of datasets.yaml (as `name`),
    README's GSCo section and configs/gsco/base.yaml name every registered arm."""
    import re

    from gsco.collab.arms import ARMS
    from gsco.data.registry import list_datasets

    from conftest import REPO

    dataset_md = (REPO / "DATASET.md").read_text()
    assert [d for d in list_datasets() if f"`{d}`" not in dataset_md] == []
    readme = (REPO / "README.md").read_text()
    gsco_section = readme[readme.index("## GSCo (collaboration)"):readme.index("### Reading answers")]
    base = (REPO / "configs/gsco/base.yaml").read_text()
    arms_comment = re.search(r"(?m)^arms: null\s+# (.*)$", base).group(1)
    assert [a for a in ARMS if f"`{a}`" not in gsco_section] == []
    assert [a for a in ARMS if not re.search(rf"\b{a}\b", arms_comment)] == []
