"""GSCo on one image, as the web app shows it: trained specialists (loaded once from their results files) predict
the image and retrieve its nearest training cases; every diagnosis arm's prompt is filled from that evidence
exactly as for a case file (``case_hints``, ``fill_case``) and the generalist (local or served) answers them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from gsco.collab.arms import generalist_arms
from gsco.collab.build_cases import case_hints
from gsco.collab.cases import fill_case
from gsco.collab.config import GscoConfig
from gsco.collab.tasks import Task
from gsco.config import ConfigError
from gsco.data.registry import DatasetError

logger = logging.getLogger(__name__)


class LiveSpecialist:
    """A trained specialist from its results file (``{run}_results.json``, beside ``{run}_config.json`` and its
    checkpoint), with a retrieval index over its training split's features, built once."""

    def __init__(self, results_path: str | Path, data_path: str | None = None, device: str = "cpu"):
        from gsco.config import load_config
        from gsco.runtime import read_json
        from gsco.specialists.build import setup_specialist
        from gsco.specialists.config import SpecialistConfig
        from gsco.specialists.models import load_specialist_checkpoint
        from gsco.specialists.predict import extract_features
        from gsco.specialists.retrieval import RetrievalIndex

        path = Path(results_path)
        results = read_json(path, "specialist results")
        stem = path.name.removesuffix("_results.json")
        config_file = path.with_name(f"{stem}_config.json")
        if not config_file.is_file():
            config_file = path.with_name(f"{stem.rsplit('_', 1)[0]}_config.json")  # a {run}_{split}_results.json
        stored = read_json(config_file, "specialist run config")
        stored.pop("training_data", None)  # the record of the files it was trained on, not a setting
        overrides = {**stored, "device": device, **({"data_path": data_path} if data_path else {})}
        self.cfg = load_config(SpecialistConfig, None, overrides)
        self.run = setup_specialist(self.cfg, checkpoint_follows=self.cfg.training_procedure != "kNN")
        if self.run.info.dims == 3:
            raise DatasetError(f"{path}: a 3D specialist; the one-image view takes 2D specialists")
        if self.cfg.training_procedure == "kNN":
            raise DatasetError(f"{path}: a kNN specialist; the one-image view takes trained classifiers")
        load_specialist_checkpoint(self.run.model, results.get("checkpoint_file") or str(self.run.files.best))
        self.run.model.to(self.run.device).eval()
        self.name = f"{self.cfg.architecture} ({path.name})"
        self.info = self.run.info
        self.train = self.run.dataset("train")
        labels, _, feats = extract_features(self.run, "train", (self.cfg.retrieval_features,), with_logits=False)
        self.index = RetrievalIndex(feats[self.cfg.retrieval_features], labels)
        self.train_labels = labels

    def input_array(self, image) -> np.ndarray:
        """A PIL image as the readers hand this specialist's training images on (grey for a one-channel model)."""
        from gsco.data.readers import image_array

        grey = not self.cfg.as_rgb and self.info.n_channels == 1
        return image_array(image, self.cfg.img_size, self.cfg.as_rgb, grey)

    @torch.no_grad()
    def look(self, image, k: int) -> dict:
        """Prediction (class index, or a 0/1 row), probabilities, and the ``k`` nearest training cases."""
        from gsco.metrics.classification import predict_labels
        from gsco.specialists.build import probabilities
        from gsco.specialists.models import features_from

        x = self.run.preprocess(self.input_array(image))[None].to(self.run.device)
        fmap = self.run.model.forward_features(x)
        prob = probabilities(self.run.model.forward_head(fmap).float().cpu(), self.info).numpy()[0]
        feature = features_from(self.run.model, fmap, self.cfg.retrieval_features).float().cpu()
        dist, ids = self.index.search(feature, min(k, len(self.index)))
        pred = predict_labels(prob[None], self.info.task)[0].tolist()  # as the results files' y_pred
        neighbours = self.train_labels[ids[0]]
        return {"prediction": pred, "probabilities": prob.tolist(), "ids": ids[0].tolist(),
                "distances": dist[0].tolist(),
                "neighbour_labels": neighbours.tolist() if self.info.multi_label else neighbours[:, 0].tolist()}

    def thumbnail(self, train_id: int):
        from PIL import Image

        array = self.train.image(train_id)
        return Image.fromarray(array).convert("RGB")


class Workbench:
    """The generalist and the specialists, loaded once; ``ask`` one question, or ``collaborate`` on one image."""

    def __init__(self, cfg: GscoConfig, specialists: list[LiveSpecialist] | None = None):
        from gsco.generalist.backends import load_generalist

        self.cfg, self.specialists = cfg, specialists or []
        self.generalist = load_generalist(cfg)
        self.task = Task.of(cfg) if self.specialists else None

    def ask(self, image, question: str) -> str:
        answer = self.generalist.answer([image], [question], self.cfg.max_new_tokens, batch_size=1,
                                         system=self.cfg.system)[0]
        if answer is None:
            raise RuntimeError("the server gave no answer (see the log)")
        return answer

    def collaborate(self, image) -> dict:
        """Every specialist's prediction, the retrieved training cases and each diagnosis arm's prompt and answer."""
        if not self.specialists:
            raise ConfigError("key 'specialists': none loaded; give specialists=[A_results.json,...]")
        task, cfg = self.task, self.cfg
        looks = [s.look(image, cfg.rad_k) for s in self.specialists]
        source, names = self.specialists[cfg.rad_from], list(task.options)
        hints = case_hints(names, task.multi_label, [lk["prediction"] for lk in looks],
                           [lk["probabilities"] for lk in looks], looks[cfg.rad_from]["neighbour_labels"],
                           looks[cfg.rad_from]["distances"])
        case = {"id": "upload", "image": "upload", "label": names[0], **hints}
        arms = list(generalist_arms(report=False))
        prompts = [fill_case(cfg, arm, case, task) for arm in arms]
        answers = self.generalist.answer([image] * len(arms), prompts, cfg.max_new_tokens, batch_size=len(arms),
                                         system=cfg.system, share_prefix=cfg.share_prefix)
        rad_names = hints["rad"]
        return {
            "specialists": [{"name": s.name, "prediction": hints["moed"][j],
                             "probabilities": dict(zip(names, map(float, lk["probabilities"])))}
                            for j, (s, lk) in enumerate(zip(self.specialists, looks))],
            "neighbours": [{"thumbnail": source.thumbnail(i), "label": label, "distance": d}
                           for i, label, d in zip(looks[cfg.rad_from]["ids"], rad_names, hints["rad_distance"])],
            "arms": [{"arm": arm, "prompt": p, "answer": a, "parsed": None if a is None else task.parse(a)}
                     for arm, p, a in zip(arms, prompts, answers)],
        }
