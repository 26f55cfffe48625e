"""The Gradio app: layout without weights, the API through gradio_client, concurrency, a real browser."""

import json
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
import zeroft

from conftest import square_photo

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    demo = app.create_app(str(tiny_checkpoint))
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                            max_file_size=app.MAX_UPLOAD, allowed_paths=[str(app.EXAMPLES)])
    yield url, str(tiny_checkpoint)
    demo.close()


@pytest.fixture(scope="module")
def embedded_server():
    """The app as `python app.py` serves it: the embedded checkpoint, with the examples."""
    demo = app.create_app()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                            max_file_size=app.MAX_UPLOAD, allowed_paths=[str(app.EXAMPLES)])
    yield url, app.allowed_checkpoints()[0]
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


def _editor(path, layers=()):
    from gradio_client import handle_file

    return {"background": handle_file(str(path)), "layers": [handle_file(str(p)) for p in layers], "composite": None}


def _generate(client, checkpoint, editor, prompt="a red square", text=5.0, obj=3.0, steps=2, n=2, seed=7):
    return client.predict(editor, prompt, "", text, obj, steps, n, seed, False, 64, "none", checkpoint,
                          api_name="/generate")


def _stub(*args, **kwargs):
    raise AssertionError("a stub handler must not be called while building the layout")


def test_build_demo_loads_no_weights():
    zeroft.pipeline_cache.clear()
    demo = app.build_demo(_stub, _stub, _stub, _stub, _stub, checkpoints=["some/checkpoint"])
    assert len(zeroft.pipeline_cache) == 0
    names = {dependency.get("api_name") for dependency in demo.config["dependencies"]}
    assert {"generate", "mask"} <= names


def test_importing_the_app_is_cheap():
    code = "import app, zeroft, sys; assert len(zeroft.pipeline_cache) == 0; print('ok')"
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], cwd=Path(app.__file__).parent, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_generate_returns_n_images_with_settings(client, server, tmp_path):
    square_photo().save(tmp_path / "photo.png")
    gallery, settings, seed = _generate(client, server[1], _editor(tmp_path / "photo.png"), n=3)
    assert len(gallery) == 3 and seed == 7
    assert settings["seeds"] == [7, 8, 9] and settings["text_guidance"] == 5.0
    assert all(Image.open(item["image"]).size == (64, 64) for item in gallery)
    assert gallery[0]["caption"].startswith("seed 7")


def test_mask_endpoint(client, tmp_path):
    from gradio_client import handle_file

    square_photo().save(tmp_path / "photo.png")
    mask = np.asarray(Image.open(client.predict(handle_file(str(tmp_path / "photo.png")), api_name="/mask")))
    assert mask.shape[:2] == (64, 64) and mask[32, 32] == 255 and mask[2, 2] == 0


def _error(client, checkpoint, **kwargs):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        _generate(client, checkpoint, **kwargs)
    message = str(caught.value)
    assert "Traceback" not in message
    return message


def test_bad_inputs_come_back_as_plain_messages(client, server, tmp_path):
    checkpoint = server[1]
    square_photo().save(tmp_path / "photo.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    assert _error(client, checkpoint, editor=None) == "Upload a photo first."
    assert "could not be read" in _error(client, checkpoint, editor=_editor(tmp_path / "junk.png"))
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(tmp_path / "empty-layer.png")
    assert "mask is empty" in _error(client, checkpoint, editor=_editor(tmp_path / "photo.png", [tmp_path / "empty-layer.png"]))
    assert "at most 1000" in _error(client, checkpoint, editor=_editor(tmp_path / "photo.png"), prompt="x" * 1500)
    assert "maximum value 30" in _error(client, checkpoint, editor=_editor(tmp_path / "photo.png"), obj=45.0)
    Image.new("RGB", (8, 8)).save(tmp_path / "tiny.png")
    assert "at least 16x16" in _error(client, checkpoint, editor=_editor(tmp_path / "tiny.png"))


def test_checkpoint_outside_the_allow_list_is_refused(client, tmp_path):
    square_photo().save(tmp_path / "photo.png")
    message = _error(client, "/etc", editor=_editor(tmp_path / "photo.png"))
    assert "not offered" in message or "not in the list of choices" in message


def test_painted_layer_is_the_mask(client, server, tmp_path):
    """A layer painted on the background corner conditions on that corner, not on the square."""
    square_photo().save(tmp_path / "photo.png")
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((255, 0, 200, 153), (0, 0, 14, 14))
    layer.save(tmp_path / "corner.png")
    corner = _generate(client, server[1], _editor(tmp_path / "photo.png", [tmp_path / "corner.png"]), n=1)[0]
    automatic = _generate(client, server[1], _editor(tmp_path / "photo.png"), n=1)[0]
    a, b = (np.asarray(Image.open(g[0]["image"]), dtype=np.float32) for g in (corner, automatic))
    assert np.abs(a - b).max() > 1


def test_two_clients_get_their_own_objects(server, tiny_checkpoint, tmp_path):
    """Concurrent requests with different photos: each result equals a direct call with its own photo."""
    from gradio_client import Client

    photos = {"red": square_photo(colour=(230, 20, 20)), "green": square_photo(colour=(20, 230, 20), box=(10, 20, 42, 52))}
    for name, photo in photos.items():
        photo.save(tmp_path / f"{name}.png")
    results = {}

    def request(name):
        client = Client(server[0], verbose=False)
        results[name] = _generate(client, server[1], _editor(tmp_path / f"{name}.png"), n=1, seed=3)[0]

    threads = [threading.Thread(target=request, args=(name,)) for name in photos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    pipe = zeroft.get_pipeline(server[1])
    for name, photo in photos.items():
        direct = pipe("a red square", object_image=photo.convert("RGBA"), text_guidance=5.0, object_guidance=3.0,
                      num_inference_steps=2, seed=3, height=64, width=64).images[0]
        served = Image.open(results[name][0]["image"])
        assert np.abs(np.asarray(served, np.float32) - np.asarray(direct, np.float32)).max() <= 1, name


def _browser_args():
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _open_and_upload(browser, url: str, photo: Path, expect, tries: int = 5):
    """Open the app, wait for the editor to mount, upload through its file input and wait for the encoder preview;
    returns the page. In headless chromium (software WebGL) gradio's image editor sometimes draws the photo but
    never sends it: no upload request reaches the server, and setting the file again on the same page does not
    help (seen in about 1 run of 4 here, loaded or not; three reloads of one page in a row once all failed in a
    full CI run), so each try opens a new page."""
    for attempt in range(tries):
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url, wait_until="load", timeout=90_000)
        expect(page.get_by_text("Upload an image")).to_be_visible(timeout=60_000)  # the editor is mounted
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        try:
            expect(page.locator("#preview img")).to_be_visible(timeout=30_000)  # automatic mask → encoder preview
            return page
        except AssertionError:
            if attempt == tries - 1:
                raise
            page.close()


@pytest.mark.browser
def test_a_real_browser_generates(embedded_server):
    """Debian's chromium on the app as shipped: upload a held-out example photo, paint the mask, move both
    sliders, generate, see N images; save a screenshot and the click-to-first-image time as artifacts."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        if os.environ.get("ZEROFT_REQUIRE_BROWSER"):
            pytest.fail("chromium is missing (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    url, checkpoint = embedded_server
    defaults = app.checkpoint_config(checkpoint).defaults
    text, obj = defaults.text_guidance + 0.5, defaults.object_guidance + 0.5
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=_browser_args())
        page = _open_and_upload(browser, url, app.EXAMPLES / "object-02.png", expect)
        page.get_by_role("button", name="Brush").first.click()
        box = page.locator("#photo canvas").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.45)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=8)
        page.mouse.up()
        page.locator("#prompt textarea").fill("two objects on a white background")
        page.locator("#text-guidance input[type=range]").fill(str(text))
        page.locator("#object-guidance input[type=range]").fill(str(obj))
        page.locator("#num-images input[type=range]").fill("4")
        clicked = time.perf_counter()
        page.locator("#generate").click()
        expect(page.locator("#gallery img").first).to_be_visible(timeout=120_000)
        first_image = time.perf_counter() - clicked
        expect(page.locator("#gallery img")).to_have_count(4, timeout=120_000)
        expect(page.locator("#settings")).to_contain_text(re.compile(rf'"text_guidance":\s*{text:g}\b'), timeout=30_000)
        expect(page.locator("#settings")).to_contain_text(re.compile(rf'"object_guidance":\s*{obj:g}\b'))
        page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
        (ARTIFACTS / "app-timing.json").write_text(json.dumps({"click_to_first_image_seconds": round(first_image, 2),
                                                               "images": 4, "steps": defaults.steps,
                                                               "checkpoint": checkpoint}) + "\n")
        browser.close()
