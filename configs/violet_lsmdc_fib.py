"""VIOLET LSMDC fill-in-the-blank (open-ended QA, spec §6): the MSRVTT-QA recipe
(configs/violet_msrvtt_qa.py) with the blanked sentence as the question, over the 908 most
frequent training answers (the authors' VIOLETv2 args; probable for v1), paper 53.7.

Data: the `lsmdc/fib` builder stores `fib` = [{sentence, answer}] and no `qa` feature; task 'qa'
then reads `fib` (vlx.data.qa.QA_FEATURES: question = the sentence with its blank, answer = the
blank's word) for training, the answer vocabulary and evaluation. No per-type accuracies: the
first-word types (what/who/...) do not apply to FiB sentences; `acc` is the paper's number.
`:demo` / `:tiny` train on moving_shapes' questions.
"""
from __future__ import annotations

import ml_collections

from configs import common, violet_common

TRAIN_EXAMPLES = 296_960    # LSMDC16 fill-in-the-blank training sentences


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return violet_common.qa_config(common.parse_preset(arg), vocab="lsmdc_fib", builder="lsmdc",
                                 builder_config="fib", train_examples=TRAIN_EXAMPLES,
                                 qtypes=())


get_config = common.with_modifiers(get_config)
