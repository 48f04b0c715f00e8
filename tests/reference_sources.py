"""What the reference code says, quoted so tests can compare our constructions with the reference's own.

Each prompt is the reference's triple-quoted literal written with explicit escapes (so that its trailing spaces
survive editors), then evaluated exactly as the reference evaluates it: the same ``.replace`` chain, the same
``.format`` / placeholder filling. Each recipe is the reference script's own text (flags and defaults), parsed by
the tests. Sources (files at their published state):
- sunanhe/MedDr: inference_gsco.py, inference_meddr.py, train.sh, src/model/internvl_chat/*.py
- sdoerrich97/rethinking-model-prototyping-MedMNISTPlus: config.yaml, train.py, evaluate.py
- MedMNIST/experiments: MedMNIST2D/train_and_eval_pytorch.py
- wang-zhanyu/R2GenGPT: configs/config.py, scripts/1-1.shallow_run_iuxray.sh, scripts/4-1.shallow_run.sh,
  dataset/data_module.py
"""

# ---------------------------------------------------------------------------------------------- inference_gsco.py
# pcam200_instruction_prompt = '''
# You are a helpful medical assistant.
# ...
# '''.replace('\n', ' ').replace('    ', ' ')
GSCO_PCAM200_PROMPT = (
    "\nYou are a helpful medical assistant.\nYour task is disease diagnosis.\nYou are given a pathology image.\n"
    "The possible diagnoses are: 'normal', 'tumor'.\nThe diagnoses of the most similar cases are ###RAD###.\n"
    "The diagnoses of the specialist models are ###MOED###.\nThe response should only contain one option.\n"
).replace('\n', ' ').replace('    ', ' ')


def gsco_fill(prompt: str, case: dict) -> str:
    """RAGDataset.__getitem__: question.replace("###RAD###", ",".join(data["rad"])) then ###MOED###."""
    question = prompt
    question = question.replace("###RAD###", ",".join(case["rad"]))
    question = question.replace("###MOED###", ",".join(case["moed"]))
    return question


GSCO_GENERATION = {"num_beams": 1, "max_new_tokens": 512, "do_sample": False}  # evaluate_chat_model()

# --------------------------------------------------------------------------------------------- inference_meddr.py
PCAM200_PROMPT = (
    "\nYou are a helpful medical assistant. \nYour task is disease diagnosis. \nYou are given a Pathology image and "
    "are required to decide if the case is normal or tumor. \nYou should answer with normal or tumor.\n"
).replace('\n', '').replace('    ', ' ')
MRG_PROMPT = (
    "\nYou are a helpful medical assistant. \nYour task is report generation. \nYou are given a chest x-ray image "
    "and you are required to generate a summary report about the image.\n"
).replace('\n', '').replace('    ', ' ')
PMCVQA_PROMPT = (
    "\nYou are a helpful medical assistant.\nYou are require to answer the question based on the medical image.\n"
    "The question is {}.\n"
).replace('\n', '').replace('    ', ' ')


def meddr_question(prompt: str, question) -> str:
    """VQADataset.__getitem__: ``if len(self.prompt) != 0: question = self.prompt.format(question)``."""
    return prompt.format(question) if len(prompt) != 0 else question


MEDDR_MAX_NEW_TOKENS = {"retoct": 20, "iumrg": 200, "pmcvqa": 200}  # ds_collections
MEDDR_GENERATION = {"min_new_tokens": 1, "length_penalty": 1, "do_sample": False}  # evaluate_chat_model()
MEDDR_NUM_BEAMS_OVER_30B = 1  # `if total_params > 30: args.num_beams = 1`

# Hermes-2 (src/utils/conversation.py) and chat() (modeling_internvl_chat.py): the text the model reads
HERMES2_SYSTEM = "Answer the questions."


def hermes2_prompt(question: str, num_image_token: int) -> str:
    image_tokens = "<img>" + "<IMG_CONTEXT>" * num_image_token + "</img>"
    return ("<|im_start|>system\n" + HERMES2_SYSTEM + "<|im_end|>" + "<|im_start|>user\n" + image_tokens + "\n"
            + question + "<|im_end|>" + "<|im_start|>assistant\n")


# ------------------------------------------------------------------------------------------------ MedDr train.sh
MEDDR_TRAIN_SH = """
  --conv_style "Hermes-2" \\
  --force_image_size 448 \\
  --down_sample_ratio 0.5 \\
  --drop_path_rate 0.0 \\
  --pad2square False \\
  --freeze_llm True \\
  --freeze_mlp True \\
  --freeze_backbone True \\
  --use_llm_lora 16 \\
  --vision_select_layer -1 \\
  --use_data_resampling False \\
  --dataloader_num_workers 4 \\
  --bf16 True \\
  --num_train_epochs 2 \\
  --per_device_train_batch_size ${PER_DEVICE_BATCH_SIZE} \\
  --gradient_accumulation_steps ${GRADIENT_ACC} \\
  --evaluation_strategy "no" \\
  --save_strategy "steps" \\
  --save_steps 5000 \\
  --save_total_limit 1 \\
  --learning_rate 1e-5 \\
  --weight_decay 0.05 \\
  --warmup_ratio 0.03 \\
  --lr_scheduler_type "cosine" \\
  --logging_steps 1 \\
  --max_seq_length 2048 \\
  --group_by_length True \\
  --do_train True \\
  --grad_checkpoint True \\
  --deepspeed "internvl_chat/zero_stage3_config.json" \\
"""
MEDDR_TRAIN_SH_ENV = {"GPUS": 8, "BATCH_SIZE": 128, "PER_DEVICE_BATCH_SIZE": 4, "NNODES": 2}  # train.sh header
# wrap_llm_lora (modeling_internvl_chat.py): lora_alpha = 2 * r, lora_dropout 0.05, the LLM's attention and MLP
MEDDR_LLM_LORA = {"alpha_per_r": 2, "dropout": 0.05,
                  "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj"]}
INTERNVL_CHAT_CONFIG_DEFAULTS = {"select_layer": -4, "downsample_ratio": 0.5, "pad2square": False}


def script_flags(text: str) -> dict[str, str]:
    """``--key value`` pairs of a shell command (quotes removed)."""
    flags = {}
    for line in text.splitlines():
        parts = line.strip().rstrip("\\").split()
        if len(parts) >= 2 and parts[0].startswith("--"):
            flags[parts[0][2:]] = parts[1].strip('"')
    return flags


# ------------------------------------------------------------------------------------------------------ MedMNIST+
MEDMNIST_PLUS_CONFIG = {"epochs": 100, "learning_rate": 0.0001, "batch_size": 64, "batch_size_eval": 256, "k": 11,
                        "seed": 9930641}  # config.yaml
MEDMNIST_PLUS_PRETRAINED = True  # train.py: timm.create_model(config['architecture'], pretrained=True, ...)
MEDMNIST_PLUS_KNN = {"n_neighbors": 11, "metric": "minkowski", "p": 2}  # evaluate.py: NearestNeighbors(n_neighbors=11)

# ----------------------------------------------------------------------------- MedMNIST v2 (train_and_eval_pytorch)
MEDMNIST_V2 = {"lr": 0.001, "gamma": 0.1, "milestones_fraction": [0.5, 0.75], "num_epochs": 100, "batch_size": 128,
               "normalize_mean": [.5], "normalize_std": [.5], "as_rgb": False, "optimizer": "adam",
               "selection": "val_auc"}

# ----------------------------------------------------------------- MedMNIST v2 3D (MedMNIST3D/train_and_eval_pytorch)
# main(): lr = 0.001, gamma=0.1, milestones = [0.5 * num_epochs, 0.75 * num_epochs], torch.optim.Adam; argparse:
# --num_epochs 100, --batch_size 32, --model_flag resnet18 (an ACS-converted 2D ResNet, --conv ACSConv,
# --pretrained_3d i3d); best model by val AUC (cur_auc > best_auc); medmnist/dataset.py MedMNIST3D.__getitem__:
# img / 255.0 (in [0, 1]), utils.Transform3D() only casts to float32 (no Normalize)
MEDMNIST_3D = {"lr": 0.001, "gamma": 0.1, "milestones_fraction": [0.5, 0.75], "num_epochs": 100, "batch_size": 32,
               "optimizer": "adam", "selection": "val_auc", "scale": "img / 255.0"}

# ---------------------------------------------------------------------------------------------------- R2GenGPT
R2GENGPT_DEFAULTS = {"precision": "bf16-mixed", "learning_rate": 1e-4, "beam_size": 3, "repetition_penalty": 2.0,
                     "length_penalty": 2.0, "llm_r": 16, "llm_alpha": 16, "vis_r": 16, "vis_alpha": 16,
                     "lora_dropout": 0.1, "end_sym": "</s>", "weights": [0.5, 0.5],  # with scorer_types Bleu_4, CIDEr
                     "train_drop_last": True}  # configs/config.py, dataset/data_module.py
R2GENGPT_IU_SHALLOW_SH = """
    --dataset ${dataset} \\
    --annotation ${annotation} \\
    --base_dir ${base_dir} \\
    --batch_size 8 \\
    --val_batch_size 12 \\
    --freeze_vm True \\
    --vis_use_lora False \\
    --savedmodel_path ${savepath} \\
    --max_length 60 \\
    --min_new_tokens 40 \\
    --max_new_tokens 100 \\
    --repetition_penalty 2.0 \\
    --length_penalty 2.0 \\
    --num_workers 8 \\
    --devices 2 \\
    --max_epochs 15 \\
    --limit_val_batches 1.0 \\
    --val_check_interval 1.0 \\
    --num_sanity_val_steps 0 \\
"""
R2GENGPT_MIMIC_SHALLOW_SH = """
    --dataset ${dataset} \\
    --annotation ${annotation} \\
    --base_dir ${base_dir} \\
    --batch_size 8 \\
    --val_batch_size 12 \\
    --freeze_vm True \\
    --vis_use_lora False \\
    --savedmodel_path ${savepath} \\
    --learning_rate 1e-4 \\
    --gradient_clip_val 1 \\
    --max_length 100 \\
    --min_new_tokens 80 \\
    --max_new_tokens 120 \\
    --repetition_penalty 2.0 \\
    --length_penalty 2.0 \\
    --num_workers 8 \\
    --devices 4 \\
    --max_epochs 5 \\
    --limit_val_batches 0.5 \\
    --val_check_interval 0.5 \\
    --num_sanity_val_steps 2 \\
"""

# ------------------------------------------------------------------------- R2Gen / R2GenGPT report cleaning rules
# dataset/data_helper.py FieldParser.clean_report (from R2Gen's modules/tokenizers.py): the report's replace chain,
# `.strip().lower().split('. ')`, then per sentence the quote/slash deletions, `.strip().lower()` and re.sub of the
# character class; sentences joined with ' . ' plus ' .'.
_NUMBERING = [('1. ', ''), ('. 2. ', '. '), ('. 3. ', '. '), ('. 4. ', '. '), ('. 5. ', '. '), (' 2. ', '. '),
              (' 3. ', '. '), (' 4. ', '. '), (' 5. ', '. ')]
IU_XRAY_REPORT_REPLACEMENTS = [('..', '.')] * 3 + _NUMBERING
IU_XRAY_SENTENCE_PATTERN = r'[.,?;*!%^&_+():-\[\]{}]'
MIMIC_CXR_REPORT_REPLACEMENTS = ([('\n', ' ')] + [('__', '_')] * 7 + [('  ', ' ')] * 6 + [('..', '.')] * 8
                                 + _NUMBERING + [(':', ' :')])
MIMIC_CXR_SENTENCE_PATTERN = r'[.,?;*!%^&_+()\[\]{}]'


def r2gen_clean(report: str, replacements, pattern: str) -> str:
    import re

    def report_cleaner(t):
        for old, new in replacements:
            t = t.replace(old, new)
        return t.strip().lower().split('. ')

    def sent_cleaner(t):
        return re.sub(pattern, '', t.replace('"', '').replace('/', '').replace('\\', '').replace("'", '').strip().lower())

    tokens = [sent_cleaner(sent) for sent in report_cleaner(report) if sent_cleaner(sent) != []]
    return ' . '.join(tokens) + ' .'


# ------------------------------------------------------------------------- the GSCo specialist code (MedMNIST+ base)
# src/config/config.yaml keys, and the file names inference_specialist.py builds with f-strings
SPECIALIST_CONFIG_KEYS = ["data_path", "output_path", "epochs", "learning_rate", "batch_size", "batch_size_eval",
                          "device", "search_top_n", "dataset", "img_size", "training_procedure", "architecture", "k",
                          "seed"]
CHECKPOINT_FILE = "{output_path}/{dataset}_{img_size}_{training_procedure}_{architecture}_s{seed}_best.pth"
RESULTS_FILE = "{output_path}/{dataset}_{img_size}_{training_procedure}_{architecture}_s{seed}_results.json"

# models/R2GenGPT.py: self.prompt and prompt_wrap's f-string
R2GENGPT_PROMPT = 'Generate a comprehensive and detailed diagnosis report for this chest xray image.'


def r2gengpt_prompt(prompt: str) -> str:
    return f'Human: <Img><ImageHere></Img> {prompt} \nAssistant:'


def r2gengpt_reference(tokenizer, report: str, max_length: int) -> str:
    """What R2GenGPT's validation_step / test_step score a report against: the target tokenized with
    padding="max_length", truncation=True, max_length, add_special_tokens=False, then its decode(): a leading
    <unk> (0) and <s> (1) dropped, decoded, cut at '</s>', stripped, '<unk>' removed."""
    ids = tokenizer(report, return_tensors="pt", padding="max_length", truncation=True, max_length=max_length,
                    add_special_tokens=False)["input_ids"][0]
    if ids[0] == 0:
        ids = ids[1:]
    if ids[0] == 1:
        ids = ids[1:]
    text = tokenizer.decode(ids, add_special_tokens=False)
    text = text.split('</s>')[0].strip()
    return text.replace('<unk>', '')
