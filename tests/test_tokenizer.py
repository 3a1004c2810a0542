"""The offline CLIP tokenizer: OpenAI ids from the real BPE vocabulary, and the guard against fallbacks."""

import gzip

import pytest
from transformers import CLIPTokenizer

from sie3d.diffusion.tokenizer import (
    BOS_ID,
    EOS_ID,
    MAX_LENGTH,
    VOCAB_SIZE,
    TokenizerError,
    byte_symbols,
    check_clip_tokenizer,
    clip_vocabulary,
    load_clip_tokenizer,
    read_merges,
    tokenizer_from_dir,
    write_tokenizer_files,
)
from sie3d.weights import model_path

pytestmark = pytest.mark.needs_offline_models


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


def test_openai_clip_ids(tokenizer):
    # ids published with OpenAI CLIP (simple_tokenizer) for this sentence
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == VOCAB_SIZE == 49408
    assert tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [BOS_ID, EOS_ID]


def test_lower_cases_and_pads_to_77_with_eos(tokenizer):
    ids = tokenizer("Photo of a ID person", padding="max_length", max_length=MAX_LENGTH).input_ids
    assert ids == tokenizer("photo of a id person", padding="max_length", max_length=MAX_LENGTH).input_ids
    assert len(ids) == 77 and ids[0] == BOS_ID and ids[6:] == [EOS_ID] * 71
    (id_token,) = tokenizer.encode("id", add_special_tokens=False)
    assert ids.count(id_token) == 1 and ids.index(id_token) == 4  # BOS photo of a id person EOS


def test_long_prompts_are_truncated_to_77_ending_in_eos(tokenizer):
    ids = tokenizer("word " * 200, truncation=True, max_length=MAX_LENGTH).input_ids
    assert len(ids) == 77 and ids[0] == BOS_ID and ids[-1] == EOS_ID


def test_vocabulary_layout():
    symbols = byte_symbols()
    assert len(symbols) == len(set(symbols)) == 256
    assert symbols[:94] == [chr(c) for c in range(ord("!"), ord("~") + 1)]  # printable ASCII maps to itself
    merges = read_merges(model_path("clip-bpe-vocab"))
    vocab = clip_vocabulary(merges)
    assert len(vocab) == VOCAB_SIZE and vocab["<|startoftext|>"] == BOS_ID and vocab["<|endoftext|>"] == EOS_ID
    assert vocab["a</w>"] == 256 + symbols.index("a") and vocab["".join(merges[0])] == 512


def test_sd15_folder_layout_gives_the_same_ids(tmp_path, tokenizer):
    folder = write_tokenizer_files(model_path("clip-bpe-vocab"), tmp_path / "tokenizer")
    assert {p.name for p in folder.iterdir()} == {"vocab.json", "merges.txt", "special_tokens_map.json",
                                                    "tokenizer_config.json"}
    from_dir = tokenizer_from_dir(folder)
    for text in ["photo of a id person, wearing glasses!", "Surprise expression", "3D émotion :-) 😀", ""]:
        assert from_dir(text).input_ids == tokenizer(text).input_ids


def test_silent_two_token_fallback_is_refused(tmp_path):
    fallback = CLIPTokenizer.from_pretrained(str(tmp_path))  # what from_pretrained gives offline: no error
    assert len(fallback) == 2
    with pytest.raises(TokenizerError, match=r"2 tokens.*sie3d weights download"):
        check_clip_tokenizer(fallback)
    with pytest.raises(TokenizerError, match="vocab.json"):
        tokenizer_from_dir(tmp_path)


def test_wrong_ids_with_the_right_size_are_refused():
    merges = read_merges(model_path("clip-bpe-vocab"))
    vocab = clip_vocabulary(merges)
    vocab["cat</w>"], vocab["dog</w>"] = vocab["dog</w>"], vocab["cat</w>"]
    with pytest.raises(TokenizerError, match="expected"):
        check_clip_tokenizer(CLIPTokenizer(vocab=vocab, merges=merges))


def test_a_file_that_is_not_the_merge_list_is_refused(tmp_path):
    bad = tmp_path / "bpe.txt.gz"
    with gzip.open(bad, "wt") as handle:
        handle.write("#version\na b\n")
    with pytest.raises(TokenizerError, match="download clip-bpe-vocab"):
        read_merges(bad)
