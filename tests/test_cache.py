"""Caches: equal results, zero repeated work, bounded size, per-photo isolation."""

import numpy as np

from zeroft import get_pipeline, pipeline_cache
from zeroft.cache import LRUCache

from conftest import square_photo


def test_cached_embeddings_give_the_same_images(tiny_pipe):
    photo = square_photo(colour=(240, 200, 20))
    kwargs = dict(object_image=photo, seed=2, num_inference_steps=2, output_type="np")
    tiny_pipe.embedding_cache.clear()
    tiny_pipe.mask_cache.clear()
    tiny_pipe.prompt_cache.clear()
    first = tiny_pipe("a yellow square", **kwargs).images
    second = tiny_pipe("a yellow square", **kwargs).images
    assert np.array_equal(first, second)
    tiny_pipe.embedding_cache.clear()
    tiny_pipe.mask_cache.clear()
    tiny_pipe.prompt_cache.clear()
    uncached = tiny_pipe("a yellow square", **kwargs).images
    assert np.array_equal(first, uncached)


def test_repeated_photo_runs_masker_and_encoder_zero_times(tiny_pipe):
    photo = square_photo(colour=(10, 240, 240))
    tiny_pipe("a cyan square", object_image=photo, num_inference_steps=1)
    masker_calls, encoder_calls = tiny_pipe.masker.calls, tiny_pipe.encoder_calls
    prompt_hits = tiny_pipe.prompt_cache.hits
    tiny_pipe("a cyan square", object_image=photo.copy(), num_inference_steps=1)  # same pixels, new object
    assert tiny_pipe.masker.calls == masker_calls
    assert tiny_pipe.encoder_calls == encoder_calls
    assert tiny_pipe.prompt_cache.hits == prompt_hits + 1


def test_different_photos_never_share_an_embedding(tiny_pipe):
    a = tiny_pipe.encode_object(square_photo(colour=(250, 0, 0)))[0]
    b = tiny_pipe.encode_object(square_photo(colour=(0, 250, 0)))[0]
    assert not np.allclose(a.numpy(), b.numpy())


def test_editing_the_mask_re_encodes(tiny_pipe):
    photo = square_photo(colour=(120, 60, 200))
    tiny_pipe.encode_object(photo)
    calls = tiny_pipe.encoder_calls
    mask = np.zeros((64, 64), np.float32)
    mask[16:40, 16:40] = 1.0
    tiny_pipe.encode_object(photo, mask)
    assert tiny_pipe.encoder_calls == calls + 1


def test_lru_is_bounded_and_counts():
    cache = LRUCache(maxsize=2)
    for key in "abc":
        cache.put(key, key.upper())
    assert len(cache) == 2 and "a" not in cache
    assert cache.get("b") == "B" and cache.get("a") is None
    cache.put("d", "D")  # evicts c, the least recently used
    assert "c" not in cache and "b" in cache
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


def test_pipelines_are_cached_per_settings(tiny_checkpoint):
    pipeline_cache.clear()
    first = get_pipeline(tiny_checkpoint, device="cpu")
    again = get_pipeline(str(tiny_checkpoint), device="cpu")
    assert first is again
    quantized = get_pipeline(tiny_checkpoint, quantization="int8", device="cpu")
    assert quantized is not first
    assert pipeline_cache.stats.misses == 2 and pipeline_cache.stats.hits == 1
    pipeline_cache.clear()


def test_a_byte_bound_evicts_by_the_size_of_the_tensors_held():
    """Patch tokens are 257 x 1280 floats per photo: the embedding cache is bounded in bytes as well as entries."""
    import torch

    from zeroft.cache import LRUCache

    cache = LRUCache(maxsize=10, max_bytes=3 * 4000)
    for key in "abcd":
        cache.put(key, torch.zeros(1000))  # 4,000 bytes each
    assert list(cache._items) == ["b", "c", "d"] and cache.bytes == 12000
    cache.put("b", torch.zeros(10))  # replacing a value counts its new size only
    assert cache.bytes == 8040
    cache.put("huge", torch.zeros(10000))  # larger than the bound alone: kept, the rest go
    assert list(cache._items) == ["huge"] and cache.bytes == 40000
    cache.clear()
    assert cache.bytes == 0 and len(cache) == 0


def test_the_embedding_cache_of_a_pipeline_is_bounded_in_bytes(tiny_pipe):
    from zeroft.generation import EMBEDDING_CACHE_BYTES

    assert tiny_pipe.embedding_cache.max_bytes == EMBEDDING_CACHE_BYTES
