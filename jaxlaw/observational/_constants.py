"""Constants of the observational-scaling study: model families, metric lists, known data errors.

Ported from the reference (ryoungj/ObsScaling ``utils/constants.py``, HEAD ``4d6e1e4``). Lists are
tuples so that no caller can mutate a shared preset (the reference notebooks do, spec §6.5).
Entry points: `EVAL_BASE_MODEL_FAMILIES`, `PREREGISTERED_MODELS`, `ALL8`, `NONGSM7`.
"""

from types import MappingProxyType

# ---------------------------------------------------------------- column names
MODEL = "Model"
FAMILY = "Model Family"
SIZE = "Model Size (B)"
DATA = "Pretraining Data Size (T)"
FLOPS = "FLOPs (1E21)"
META_COLUMNS = (MODEL, FAMILY, SIZE, DATA, FLOPS)

# ---------------------------------------------------------------- base model families
# The 21 families of the paper (initial public version, in the reference's map order) ...
_PAPER_FAMILIES = (
    "Llama-2",
    "Llama",
    "Llama-3",
    "Qwen1.5",
    "Qwen",
    "Mistral",
    "Mixtral",
    "Yi",
    "Gemma",
    "Falcon",
    "Phi",
    "Pythia",
    "BLOOM",
    "GPT-Neo/J",
    "OPT",
    "MPT",
    "XGLM",
    "CodeLlama",
    "StarCoder",
    "StarCoder2",
    "DeepSeek-Coder",
)
# ... and the 7 added for the pre-registered prediction study (paper v3). Their position only
# matters for tie-breaking in subset selection, whose pools use the 21 above.
PREREGISTERED_FAMILIES = (
    "Qwen2",
    "Llama-3.1",
    "Yi-1.5",
    "Gemma-2",
    "DeepSeek-V2",
    "DeepSeek-Coder-V2",
    "Jamba",
)
EVAL_BASE_MODEL_FAMILIES = _PAPER_FAMILIES + PREREGISTERED_FAMILIES

# Families with metadata in base_llm_benchmark_eval.csv but outside the study.
MISC_BASE_MODEL_FAMILIES = (
    "Yi-200K",
    "OpenLlamaV2",
    "OpenLlama",
    "GPT-2",
    "InternLM2",
    "DeepSeek-LLM",
    "DeepSeek-MoE",
    "DeciLM",
    "StableLM",
    "RWKV",
    "RedPajama-INCITE-Base",
    "Amber",
    "Codegen",
    "SmolLM",
    "Cerebras-GPT",
    "BTLM",
    "H2O-Danube",
    "OLMo",
    "TinyLlama",
)
ALL_BASE_MODEL_FAMILIES = EVAL_BASE_MODEL_FAMILIES + MISC_BASE_MODEL_FAMILIES

# Families whose model and data sizes (hence FLOPs) are public.
EVAL_BASE_MODEL_WITH_FLOPS_FAMILIES = tuple(
    f for f in EVAL_BASE_MODEL_FAMILIES if f not in ("Mistral", "Mixtral", "Qwen2")
)

BASE_CODE_MODEL_FAMILIES = (
    "StarCoder",
    "CodeLlama",
    "Codegen",
    "StarCoder2",
    "DeepSeek-Coder",
    "DeepSeek-Coder-V2",
)
EVAL_BASE_NONCODE_FAMILIES = tuple(
    f for f in EVAL_BASE_MODEL_FAMILIES if f not in BASE_CODE_MODEL_FAMILIES
)
EVAL_BASE_CODE_FAMILIES = tuple(
    f for f in EVAL_BASE_MODEL_FAMILIES if f in BASE_CODE_MODEL_FAMILIES
)

# The 20 models held out of every default analysis (paper v3's pre-registered predictions):
# every model of the 7 new families plus three new models of older families.
PREREGISTERED_MODELS = (
    "meta-llama/Meta-Llama-3.1-405B-FP8",
    "meta-llama/Meta-Llama-3.1-70B",
    "meta-llama/Meta-Llama-3.1-8B",
    "Qwen/Qwen1.5-110B",
    "Qwen/Qwen2-72B",
    "Qwen/Qwen2-57B-A14B",
    "Qwen/Qwen2-7B",
    "Qwen/Qwen2-1.5B",
    "Qwen/Qwen2-0.5B",
    "mistralai/Mixtral-8x22B-v0.1",
    "mistralai/Mistral-Nemo-Base-2407",
    "deepseek-ai/DeepSeek-V2",
    "deepseek-ai/DeepSeek-Coder-V2-Base",
    "01-ai/Yi-1.5-34B",
    "01-ai/Yi-1.5-9B",
    "01-ai/Yi-1.5-6B",
    "google/gemma-2-27b",
    "google/gemma-2-9b",
    "google/gemma-2-2b",
    "ai21labs/Jamba-v0.1",
)

# ---------------------------------------------------------------- instruct model families
EVAL_INSTRUCT_MODEL_FAMILIES = (
    "GPT-4",
    "Claude-2",
    "Claude-1",
    "GPT-3.5-Turbo",
    "Text-Davinci",
    "Claude-Instant",
    "PALM-2-Chat",
    "Llama-2-Chat",
    "Mistral-Instruct",
    "Vicuna",
    "Codellama-Instruct",
    "OpenChat",
    "Deepseek-LLM-Chat",
    "WizardLM",
    "Guanaco",
    "Lemur-Chat",
    "Koala",
    "Codegeex2",
    "Dolly-v2",
    "ChatGLM",
    "Oasst-SFT",
)

# ---------------------------------------------------------------- metrics
ALL8 = ("MMLU", "ARC-C", "HellaSwag", "Winograd", "TruthfulQA", "GSM8K", "XWinograd", "HumanEval")
# Without GSM8K, for targets that GSM8K would leak into (arithmetic, post-training GSM8K).
NONGSM7 = tuple(m for m in ALL8 if m != "GSM8K")
INSTRUCT7 = ("MMLU", "ARC-C", "HellaSwag", "Winogrande", "TruthfulQA", "GSM8K", "HumanEval")
LEADERBOARD_V2 = (
    "leaderboard_bbh",
    "leaderboard_gpqa",
    "leaderboard_ifeval",
    "leaderboard_math_hard",
    "leaderboard_mmlu_pro",
    "leaderboard_musr",
)
EMERGENT = (
    "parsinlu_qa_2_acc",
    "word_unscrambling_2_exact_match",
    "ipa_transliterate_2_exact_match",
    "ipa_transliterate_2_bleu",  # BLEU, 0..100: not a fraction
    "arithmetic_3ds_2_acc",
    "arithmetic_3da_2_acc",
    "arithmetic_2dm_2_acc",
    "arithmetic_2da_2_acc",
)
# Columns whose values are accuracies in [0, 1]; the loader rejects anything outside.
FRACTION_COLUMNS = frozenset(
    ALL8 + INSTRUCT7 + LEADERBOARD_V2 + tuple(c for c in EMERGENT if not c.endswith("_bleu"))
)

# Random-guess accuracy of each BIG-Bench-Hard subtask (for min-max normalising BBH targets).
BBH_RANDOM = MappingProxyType(
    {
        "boolean_expressions": 1 / 2,
        "causal_judgement": 1 / 2,
        "date_understanding": 1 / 6,
        "disambiguation_qa": 1 / 3,
        "dyck_languages": 0.0,
        "formal_fallacies": 1 / 2,
        "geometric_shapes": 1 / 9,
        "hyperbaton": 1 / 2,
        "logical_deduction_five_objects": 1 / 5,
        "logical_deduction_seven_objects": 1 / 7,
        "logical_deduction_three_objects": 1 / 3,
        "movie_recommendation": 1 / 5,
        "multistep_arithmetic_two": 0.0,
        "navigate": 1 / 2,
        "object_counting": 0.0,
        "penguins_in_a_table": 1 / 5,
        "reasoning_about_colored_objects": 1 / 18,
        "ruin_names": 1 / 4,
        "salient_translation_error_detection": 1 / 6,
        "snarks": 1 / 2,
        "sports_understanding": 1 / 2,
        "temporal_sequences": 1 / 4,
        "tracking_shuffled_objects_five_objects": 1 / 5,
        "tracking_shuffled_objects_seven_objects": 1 / 7,
        "tracking_shuffled_objects_three_objects": 1 / 3,
        "web_of_lies": 1 / 2,
        "word_sorting": 0.0,
    }
)
BBH_SUBTASKS = tuple(BBH_RANDOM)
# Mean random-guess accuracy over the 27 subtasks (0.2618): the floor of the BBH-overall target.
BBH_RANDOM_MEAN = sum(BBH_RANDOM.values()) / len(BBH_RANDOM)

# ---------------------------------------------------------------- known data errors
# model -> {column: corrected value}. BTLM-3B's data size is in billions, not trillions, in the
# reference CSVs (D = 627 T, FLOPs 11286 instead of 0.627 T, 11.286).
KNOWN_ERRORS = MappingProxyType(
    {"cerebras/btlm-3b-8k-base": MappingProxyType({DATA: 0.627, FLOPS: 11.286})}
)

# ---------------------------------------------------------------- shipped tables
TABLES = MappingProxyType(
    {
        "base": "base_llm_benchmark_eval.csv",
        "sub10b": "base_llm_benchmark_eval_sub_10b.csv",
        "instruct": "instruct_llm_benchmark_eval.csv",
        "emergent": "base_llm_emergent_capability_eval.csv",
        "leaderboard_v2": "base_llm_leaderboard_v2_eval.csv",
        "post_training": "base_llm_post_training_eval.csv",
        "agent": "instruct_llm_agent_eval.csv",
    }
)
BASE_TABLES = ("base", "sub10b")
