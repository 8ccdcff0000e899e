"""Task generators and data loaders: memorization, arithmetic, XML, PTB and music.

``get_task(name, data_dir)`` returns a ``Task``; ``task.stream(split, seed, length)``
returns one long next-step-prediction ``Stream`` (inputs, targets, mask). Where users
get the standard data files: PTB from Mikolov's ``simple-examples.tgz`` (folder
``data/``); the music pickles from Boulanger-Lewandowski et al. 2012
(http://www-etud.iro.umontreal.ca/~boulanni/icml2012). ``ptb-mini`` and ``chorales``
are bundled (see ``data/README.md``).
"""

from archsearch.tasks._arithmetic import ArithmeticProblem, parse_arithmetic
from archsearch.tasks._base import DEFAULT_LENGTH, SPLITS, Difficulty, Split, Stream, Task
from archsearch.tasks._chars import CharTask
from archsearch.tasks._music import LOWEST, NUM_KEYS, MusicTask, safe_load_pickle
from archsearch.tasks._ptb import WordTask
from archsearch.tasks._metric import Kind, Metric
from archsearch.tasks._registry import get_task, register_task, task_names

__all__ = [
    "DEFAULT_LENGTH",
    "LOWEST",
    "NUM_KEYS",
    "SPLITS",
    "ArithmeticProblem",
    "CharTask",
    "Difficulty",
    "Kind",
    "Metric",
    "MusicTask",
    "Split",
    "Stream",
    "Task",
    "WordTask",
    "get_task",
    "parse_arithmetic",
    "register_task",
    "safe_load_pickle",
    "task_names",
]
