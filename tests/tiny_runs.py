"""Command-line settings shared by the tests that run the multilingual command for a few seconds: the
shipped data cut to a few hundred sentences per language, a vocabulary of 300 and a model of 16 hidden units.
Each test adds its own steps, languages and output folder."""

SMALL_MULTILINGUAL = (
    "--max_train_texts 200 --max_eval_texts 20 --vocab_size 300 --tokenizer_sentences 400 "
    "--hidden_size 16 --intermediate_size 32 --no-progress"
).split()
