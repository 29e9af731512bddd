"""Host-side loading: fine-tuning loss tables (numpy/pandas) and tokenised text sets.

Entry points: `load_dataset` for the reference tables and `load_table` for any CSV in the
same format. The reference tables ship inside the package (`bundled_root`); `data_root` picks
where they are read from: ``root`` (the CLI's ``--data DIR``), else ``$JAXLAW_DATA``, else the
bundled copy::

    from jaxlaw.data import load_dataset, take_models
    flan = load_dataset("flan")                 # the bundled rectified/flan.csv
    flan.loss.shape, flan.sizes[:3]             # (30, 15), [0, 200, 400]
    giga = take_models(load_dataset("gigaword"), flan.models)   # align rows by name

Malformed input raises `TableError` (a ValueError) with one line naming the culprit.

Text for LoRA fine-tuning and pre-training (numpy + ``tokenizers``): `load_tokenizer` /
`train_tokenizer` / `save_tokenizer` give a `TextTokenizer`; `load_records`, `load_task` and
`format_examples` read local files into prompt and response strings; `tokenize_examples` (loss
on the response only) and `pack_texts` (pre-training windows) turn them into a `TokenizedSet`
of padded arrays plus masks. `stdlib_corpus` (Python's own standard library) is a pre-training
corpus that needs no download::

    from jaxlaw.data import load_task, stdlib_corpus, tokenize_examples, train_tokenizer
    tok = train_tokenizer(stdlib_corpus(), vocab_size=1024)
    task = load_task("train.jsonl")             # fields "prompt" and "response"
    ts = tokenize_examples(tok, task.prompts, task.responses)   # padded arrays + masks

GSM8K: `gsm8k_prompt` poses a question as chat messages (ending in ``#### <number>``),
`gsm8k_final_answer` reads the normalised final number of a solution and `gsm8k_exact_match`
compares a model's text with the reference (`jaxlaw.training.gsm8k_accuracy` runs the eval).
"""

from ._corpus import STDLIB_EXCLUDE as STDLIB_EXCLUDE
from ._corpus import Task as Task
from ._corpus import load_records as load_records
from ._corpus import load_task as load_task
from ._corpus import stdlib_corpus as stdlib_corpus
from ._gsm8k import GSM8K_INSTRUCTION as GSM8K_INSTRUCTION
from ._gsm8k import gsm8k_exact_match as gsm8k_exact_match
from ._gsm8k import gsm8k_final_answer as gsm8k_final_answer
from ._gsm8k import gsm8k_prompt as gsm8k_prompt
from ._table import DATASETS as DATASETS
from ._table import MEASURED as MEASURED
from ._table import LossTable as LossTable
from ._table import TableError as TableError
from ._table import bundled_root as bundled_root
from ._table import check_fit_points as check_fit_points
from ._table import data_root as data_root
from ._table import load_dataset as load_dataset
from ._table import load_table as load_table
from ._table import read_raw_csv as read_raw_csv
from ._table import table_from_frame as table_from_frame
from ._table import take_models as take_models
from ._text import BUCKETS as BUCKETS
from ._text import Examples as Examples
from ._text import TokenizedSet as TokenizedSet
from ._text import TruncationWarning as TruncationWarning
from ._text import format_examples as format_examples
from ._text import pack_texts as pack_texts
from ._text import row_lengths as row_lengths
from ._text import take as take
from ._text import tokenize_examples as tokenize_examples
from ._text import trim_length as trim_length
from ._tokenizer import ENDOFTEXT as ENDOFTEXT
from ._tokenizer import TextTokenizer as TextTokenizer
from ._tokenizer import load_tokenizer as load_tokenizer
from ._tokenizer import save_tokenizer as save_tokenizer
from ._tokenizer import train_tokenizer as train_tokenizer
