"""OnnxMiniLMEncoder must give MiniLMEncoder's vectors, and export the model once, not on every start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memory_store.embedding.embedder import MiniLMEncoder
from memory_store.embedding.onnx_encoder import OnnxMiniLMEncoder, model_digest

pytestmark = pytest.mark.timeout(600)

_LONG = " ".join(f"step {i}: open the settings page, choose billing, then press save." for i in range(60))
TEXTS: list[str] = [
    "",
    " ",
    "hi",
    "How do I reset my password?",
    "how do i reset my password",
    "HOW DO I RESET MY PASSWORD?!",
    "Password reset link expired, what now?",
    "What's the refund policy for annual plans?",
    "Can I get a refund after 30 days?",
    "My invoice shows the wrong VAT number.",
    "Why was my card declined?",
    "Export all my data as CSV",
    "Delete my account permanently",
    "The app crashes on startup after the 2.3.1 update",
    "TypeError: 'NoneType' object is not subscriptable",
    "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "SELECT * FROM users WHERE email LIKE '%@example.com';",
    "curl -X POST https://api.example.com/v1/chat/completions -d '{}'",
    "Write a haiku about autumn leaves.",
    "Translate 'good morning' into French.",
    "Wie setze ich mein Passwort zurück?",
    "¿Cómo restablezco mi contraseña?",
    "Comment réinitialiser mon mot de passe ?",
    "Как сбросить пароль?",
    "パスワードをリセットするにはどうすればよいですか？",
    "如何重置我的密码？",
    "비밀번호를 재설정하려면 어떻게 해야 하나요?",
    "كيف يمكنني إعادة تعيين كلمة المرور؟",
    "Café naïve façade résumé coöperate",
    "emoji test 🚀🔥 rocket launch 🎉",
    "\t\nwhitespace\u00a0around\u2003words\n",
    "zero\u200bwidth\u200bjoiners",
    "1 + 1 = 2; 2 * 3 = 6; sqrt(16) = 4",
    "3.14159265358979323846264338327950288419716939937510",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...,,,;;;:::",
    "[CLS] [SEP] [PAD] [MASK] [UNK]",
    "<|im_start|>user\nhello<|im_end|>",
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat while the dog slept by the fire.",
    "Summarise the following meeting notes in three bullet points.",
    "Explain the difference between TCP and UDP to a five year old.",
    "What is the capital of Australia?",
    "List the planets of the solar system in order from the sun.",
    "Generate a SQL migration that adds a nullable column named archived_at.",
    "word " * 120,
    _LONG,
    _LONG + " ünïcödé tail that truncation must drop",
    "日本語の長い文章です。" * 60,
    "Short question after long ones?",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_encoder(cache_dir: Path) -> OnnxMiniLMEncoder:
    return OnnxMiniLMEncoder(cache_dir=cache_dir)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_vectors_match_sentence_transformers(onnx_encoder: OnnxMiniLMEncoder, encoder: MiniLMEncoder) -> None:
    assert len(TEXTS) == 50
    assert onnx_encoder.dim == encoder.dim == 384
    expected = encoder.encode(TEXTS)
    batched = onnx_encoder.encode(TEXTS)  # one padded batch: mask and padding must not leak into the mean
    single = np.stack([onnx_encoder.encode([text])[0] for text in TEXTS])
    for got in (batched, single):
        assert got.shape == (50, 384) and got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        cosines = _cosines(got, expected)
        worst = int(np.argmin(cosines))
        assert cosines[worst] >= 0.999, f"{TEXTS[worst][:60]!r}: cosine {cosines[worst]:.6f}"


def test_onnx_truncates_long_texts_at_256_tokens_like_sentence_transformers(onnx_encoder: OnnxMiniLMEncoder) -> None:
    # tokenizer.json ships with a 128-token limit; MiniLMEncoder uses 256, so text after token 128 must count...
    head, tail = onnx_encoder.encode([" ".join(["apple"] * 150) + " banana", " ".join(["apple"] * 150) + " rocket"])
    assert float(head @ tail) < 0.99999
    # ...and text after token 256 must not.
    head, tail = onnx_encoder.encode([_LONG + " banana", _LONG + " rocket"])
    assert float(head @ tail) > 0.99999


def test_onnx_export_is_reused_from_cache(onnx_encoder: OnnxMiniLMEncoder, cache_dir: Path) -> None:
    exported = onnx_encoder.model_path
    before = exported.stat().st_mtime_ns
    again = OnnxMiniLMEncoder(cache_dir=cache_dir)
    assert again.model_path == exported
    assert exported.stat().st_mtime_ns == before
    assert exported.parent == cache_dir / "onnx"
    assert not [p.name for p in exported.parent.iterdir() if "tmp" in p.name]  # no temp files left behind
    np.testing.assert_array_equal(again.encode(["same vectors"]), onnx_encoder.encode(["same vectors"]))
    assert onnx_encoder.encode([]).shape == (0, 384)


def test_changed_model_files_change_the_export_key(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    for name in ("config.json", "model.safetensors", "modules.json", "1_Pooling/config.json"):
        (tmp_path / name).write_bytes(b"v1")
    first = model_digest(tmp_path)
    assert model_digest(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"v2")
    assert model_digest(tmp_path) != first


def test_int8_encoder_keeps_the_similarity_bands(cache_dir: Path, encoder: MiniLMEncoder) -> None:
    """The proxy's default embedder is the int8 copy: it must not move questions across the policy's bands."""
    int8 = OnnxMiniLMEncoder(cache_dir=cache_dir, quantized=True)
    assert int8.model_path.name.endswith("-int8.onnx") and int8.model_path.is_file()
    assert int8.model_path.stat().st_size < 70_000_000  # fp32: ~90 MB; the vocabulary table stays fp32
    got, expected = int8.encode(TEXTS), encoder.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _cosines(got, expected).min() >= 0.97
    pairwise_shift = np.abs(got @ got.T - expected @ expected.T)
    assert pairwise_shift.mean() < 0.03 and pairwise_shift.max() < 0.1
    reloaded = OnnxMiniLMEncoder(cache_dir=cache_dir, quantized=True)
    np.testing.assert_array_equal(reloaded.encode(["cached int8"]), int8.encode(["cached int8"]))
