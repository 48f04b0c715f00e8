"""The web app of ``python demo.py web=true``: one page where a user uploads an image (PNG/JPEG, DICOM, NIfTI), asks a
question and reads the generalist's answer; in GSCo mode it also shows each specialist's prediction with its
probabilities, the retrieved training cases as thumbnails with their labels, and every arm's exact prompt and answer
side by side. Models load once (a :class:`~gsco.collab.single.Workbench`); a bad upload is a message on the page;
an upload is deleted when its browser tab closes unless the user ticks "keep my upload"."""


import logging
import shutil
from pathlib import Path

from gsco.collab.single import Workbench
from gsco.errors import MissingDependencyError

logger = logging.getLogger(__name__)
MODES = ("MedDr", "GSCo")


class Uploads:
    """The files each browser session uploaded, deleted when its tab closes (gradio keeps them otherwise)."""

    def __init__(self, keep_dir: str | Path):
        self.keep_dir, self.by_session = Path(keep_dir), {}

    def record(self, session: str, path: str) -> None:
        self.by_session.setdefault(session, set()).add(path)

    def keep(self, path: str) -> Path:
        """A copy in ``keep_dir`` under the upload's name, or ``name-2.ext``, ``name-3.ext``, ... when a kept file
        already has it (an earlier upload is never overwritten)."""
        self.keep_dir.mkdir(parents=True, exist_ok=True)
        name = Path(path).name
        double = name.lower().endswith(".nii.gz")
        stem, suffix = (name[:-7], ".nii.gz") if double else (Path(name).stem, Path(name).suffix)
        target, k = self.keep_dir / name, 1
        while True:
            try:
                with open(target, "xb") as out, open(path, "rb") as src:  # x: never replaces a file
                    shutil.copyfileobj(src, out)
                return target
            except FileExistsError:
                k += 1
                target = self.keep_dir / f"{stem}-{k}{suffix}"

    def forget(self, session: str) -> None:
        for path in self.by_session.pop(session, set()):
            Path(path).unlink(missing_ok=True)


MAX_UPLOAD_VOXELS = 512 ** 3  # a NIfTI upload holding more (a small .nii.gz can expand to gigabytes) is refused


def check_upload_size(path: Path, max_voxels: int = MAX_UPLOAD_VOXELS) -> None:
    """A NIfTI upload whose header promises more than ``max_voxels`` is refused before it is decompressed."""
    from gsco.data.medical import MedicalImageError, nifti_voxels
    from gsco.data.readers import DatasetError

    if path.name.lower().endswith((".nii", ".nii.gz")):
        try:
            voxels = nifti_voxels(path)
        except MedicalImageError as exc:
            raise DatasetError(str(exc)) from None
        if voxels > max_voxels:
            raise DatasetError(f"{path.name} holds a volume of {voxels:,} voxels, more than this page takes "
                               f"({max_voxels:,}); render a slice with python -m gsco.data.render and upload that")


def answer_page(workbench: Workbench, uploads: Uploads, upload: str | None, question: str, mode: str, keep: bool,
                session: str, render=None, max_voxels: int = MAX_UPLOAD_VOXELS) -> dict:
    """What the page shows for one click; an unreadable upload or a failed answer becomes ``message``."""
    from gsco.data.readers import DatasetError, open_image

    empty = {"seen": None, "message": "", "answer": "", "specialists": [], "neighbours": [], "arms": []}
    if not upload:
        return {**empty, "message": "Upload an image first (PNG, JPEG, DICOM or NIfTI)."}
    uploads.record(session, upload)
    try:
        check_upload_size(Path(upload), max_voxels)
        image = open_image(upload, render).convert("RGB")
    except DatasetError as exc:
        return {**empty, "message": f"This file cannot be read as an image: {exc}"}
    note = f"Kept a copy: {uploads.keep(upload)}" if keep else ""
    if not question.strip():
        return {**empty, "seen": image, "message": "Write a question."}
    try:
        if mode == "GSCo":
            result = workbench.collaborate(image)
        else:
            return {**empty, "seen": image, "message": note, "answer": workbench.ask(image, question)}
    except (RuntimeError, ValueError) as exc:
        return {**empty, "seen": image, "message": f"No answer: {exc}"}
    answers = {a["arm"]: a["answer"] for a in result["arms"]}
    return {**empty, "seen": image, "message": note, "answer": answers.get("moed_rad") or "",
            "specialists": [[s["name"], s["prediction"],
                             ", ".join(f"{k}: {v:.3f}" for k, v in s["probabilities"].items())]
                            for s in result["specialists"]],
            "neighbours": [(n["thumbnail"], f"{n['label']} (distance {n['distance']:.3f})")
                           for n in result["neighbours"]],
            "arms": [[a["arm"], a["prompt"], a["answer"] or "(no answer)"] for a in result["arms"]]}


def build_app(workbench: Workbench, keep_dir: str | Path = "outputs/web/uploads", render=None,
              question: str = "What abnormality is seen?"):
    """The page (a ``gradio.Blocks``); ``launch`` it."""
    try:
        import gradio as gr
    except ImportError:
        raise MissingDependencyError("the web app needs gradio: pip install -e \".[web]\"") from None

    uploads = Uploads(keep_dir)
    modes = list(MODES) if workbench.specialists else ["MedDr"]
    with gr.Blocks(title="GSCo") as app:
        gr.Markdown("## MedDr and GSCo\nUpload an image, ask a question. GSCo mode also shows the specialists' "
                    "evidence and every arm's prompt and answer.")
        with gr.Row():
            upload = gr.File(label="Image: PNG, JPEG, DICOM (.dcm) or NIfTI (.nii, .nii.gz)", type="filepath",
                             elem_id="upload")
            seen = gr.Image(label="What the model sees", type="pil", interactive=False, elem_id="seen")
        with gr.Row():
            text = gr.Textbox(label="Question", value=question, elem_id="question")
            mode = gr.Radio(modes, value=modes[0], label="Mode", elem_id="mode")
            keep = gr.Checkbox(label="keep my upload", value=False, elem_id="keep")
        ask = gr.Button("Ask", variant="primary", elem_id="ask")
        message = gr.Markdown(elem_id="message")
        answer = gr.Textbox(label="Answer (GSCo: the moed_rad arm)", interactive=False, elem_id="answer")
        specialists = gr.Dataframe(headers=["specialist", "prediction", "probabilities"], label="Specialists",
                                   elem_id="specialists")
        neighbours = gr.Gallery(label="Retrieved training cases", columns=5, height="auto", elem_id="neighbours")
        arms = gr.Dataframe(headers=["arm", "prompt", "answer"], wrap=True, label="Arms", elem_id="arms")

        def click(upload_path, question_text, chosen, keep_it, request: gr.Request):
            page = answer_page(workbench, uploads, upload_path, question_text, chosen, keep_it,
                               request.session_hash, render)
            return (page["seen"], page["message"], page["answer"], page["specialists"], page["neighbours"],
                    page["arms"])

        ask.click(click, inputs=[upload, text, mode, keep],
                  outputs=[seen, message, answer, specialists, neighbours, arms])
        def tab_closed(request: gr.Request):
            uploads.forget(request.session_hash)

        app.unload(tab_closed)
    return app
