"""The image extractor: shapes, pooling, image modes, real EfficientNet-Lite0 weights, the core, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

from bids_encoding.plugin_api import Images, UserError, extract_features, load_plugin, stimuli_from_events
from bids_encoding_cnn import CNN, LITE0_LAYERS, LiteBackbone, column_names, lite0_logits, lite_pixels, load_backbone

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def as_images(paths) -> Images:
    paths = tuple(Path(p) for p in paths)
    return Images(onset=np.arange(len(paths), dtype=float) * 2, duration=np.ones(len(paths)), path=paths)


# --------------------------------------------------------------------------- a tiny ResNet


def test_tiny_resnet_gives_one_space_per_layer_with_pooled_columns(tiny_resnet, photos):
    stimuli = as_images(photos)
    avg = CNN(model=tiny_resnet).extract(stimuli)
    grid = CNN(model=tiny_resnet, pooling="grid2", layers="1,-1").extract(stimuli)
    channels = {"L0": 8, "L1": 8, "L2": 16, "L3": 24, "L4": 32}  # the stem, then the 4 stages
    assert {k: v.shape for k, v in avg.spaces.items()} == {k: (6, c) for k, c in channels.items()}
    assert {k: v.shape for k, v in grid.spaces.items()} == {"L1": (6, 32), "L4": (6, 128)}
    avg.check(6)
    grid.check(6)
    assert avg.columns["L2"][:2] == ["c0", "c1"] and grid.columns["L1"][:5] == ["c0y0x0", "c0y0x1", "c0y1x0",
                                                                                "c0y1x1", "c1y0x0"]
    # L1 is 8 x 8: the mean of the four 4 x 4 cells of a channel is its global average
    np.testing.assert_allclose(grid.spaces["L1"].reshape(6, 8, 4).mean(-1), avg.spaces["L1"], atol=1e-5)
    info = avg.info["VisionModel"]
    assert info["Class"] == "ResNetModel" and info["InputSize"] == [32, 32] and info["Images"] == 6
    assert info["Layers"] == [0, 1, 2, 3, 4] and info["LayerShapes"]["L2"] == [16, 4, 4] and info["Parameters"] > 1000
    np.testing.assert_array_equal(avg.onset, stimuli.onset)


def test_features_equal_the_models_own_hidden_states(tiny_resnet, photos):
    """Pooling the states of AutoModel on the processor's pixels, by hand, gives the same numbers."""
    features = CNN(model=tiny_resnet, pooling="grid2").extract(as_images(photos[:3]))
    processor = AutoImageProcessor.from_pretrained(tiny_resnet, backend="pil")
    model = AutoModel.from_pretrained(tiny_resnet).eval()
    pixels = processor(images=[Image.open(p).convert("RGB") for p in photos[:3]], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        states = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    for layer, state in enumerate(states):
        expected = torch.nn.functional.adaptive_avg_pool2d(state, 2).flatten(1).numpy()
        np.testing.assert_allclose(features.spaces[f"L{layer}"], expected, atol=1e-5, rtol=1e-5)


def test_deterministic_batch_independent_and_different_images_differ(tiny_resnet, photos):
    stimuli = as_images(photos)
    first = CNN(model=tiny_resnet, batch_size=4).extract(stimuli)
    again = CNN(model=tiny_resnet, batch_size=1).extract(stimuli)
    for label in first.spaces:
        np.testing.assert_allclose(first.spaces[label], again.spaces[label], atol=1e-5)
        distances = np.linalg.norm(first.spaces[label][:, None] - first.spaces[label][None], axis=-1)
        assert np.all(distances[~np.eye(6, dtype=bool)] > 1e-4), label


def test_a_repeated_image_is_computed_once_and_gets_the_same_row(tiny_resnet, photos):
    stimuli = as_images([photos[0], photos[1], photos[0], photos[0]])
    features = CNN(model=tiny_resnet, layers="-1").extract(stimuli)
    values = features.spaces["L4"]
    assert features.info["VisionModel"]["DistinctImages"] == 2 and values.shape == (4, 32)
    np.testing.assert_array_equal(values[0], values[2])
    np.testing.assert_array_equal(values[0], values[3])
    assert not np.allclose(values[0], values[1])


def test_greyscale_palette_16bit_and_rgba_images_work(tiny_resnet, tmp_path):
    """Any mode becomes RGB: grey as equal channels, 16-bit rescaled, opaque RGBA as its RGB, transparency over white."""
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    Image.fromarray(grey, "L").convert("P").save(tmp_path / "palette.png")
    rgb = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((48, 48), 255, np.uint8)]), "RGBA").save(tmp_path / "opaque.png")
    Image.fromarray(np.dstack([rgb, np.zeros((48, 48), np.uint8)]), "RGBA").save(tmp_path / "clear.png")
    Image.new("RGB", (48, 48), "white").save(tmp_path / "white.png")
    names = ["grey", "grey_rgb", "grey16", "palette", "rgb", "opaque", "clear", "white"]
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    features = CNN(model=tiny_resnet, layers="-1").extract(as_images([tmp_path / f"{n}.png" for n in names]))
    row = {name: features.spaces["L4"][i] for i, name in enumerate(names)}
    for a, b in [("grey", "grey_rgb"), ("grey16", "grey_rgb"), ("palette", "grey_rgb"), ("opaque", "rgb"),
                 ("clear", "white")]:
        np.testing.assert_allclose(row[a], row[b], atol=1e-5, err_msg=f"{a} vs {b}")
    assert not np.allclose(row["grey"], row["rgb"])


# --------------------------------------------------------------------------- a tiny ViT (token sequences)


def test_vit_pools_patch_tokens_without_cls_or_takes_cls(tiny_vit, photos):
    stimuli = as_images(photos[:3])
    mean = CNN(model=tiny_vit).extract(stimuli)
    grid = CNN(model=tiny_vit, pooling="grid2", layers="-1").extract(stimuli)
    cls = CNN(model=tiny_vit, tokens="cls").extract(stimuli)
    processor = AutoImageProcessor.from_pretrained(tiny_vit, backend="pil")
    model = AutoModel.from_pretrained(tiny_vit).eval()
    pixels = processor(images=[Image.open(p).convert("RGB") for p in photos[:3]], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        states = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(states) == len(mean.spaces) == 3 and states[0].shape == (3, 17, 16)  # CLS + 4 x 4 patches
    for layer, state in enumerate(states):
        np.testing.assert_allclose(mean.spaces[f"L{layer}"], state[:, 1:].mean(1).numpy(), atol=1e-5)
        np.testing.assert_allclose(cls.spaces[f"L{layer}"], state[:, 0].numpy(), atol=1e-5)
    patches = states[-1][:, 1:].reshape(3, 4, 4, 16)  # rows, columns, channels
    top_left = patches[:, :2, :2].mean((1, 2)).numpy()
    np.testing.assert_allclose(grid.spaces["L2"].reshape(3, 16, 4)[:, :, 0], top_left, atol=1e-5)
    assert mean.info["VisionModel"]["Tokens"] == "mean" and cls.info["VisionModel"]["Tokens"] == "cls"
    with pytest.raises(UserError, match="tokens=cls"):
        CNN(model=tiny_vit, tokens="cls", pooling="grid3").extract(stimuli)


# --------------------------------------------------------------------------- real EfficientNet-Lite0 weights


def test_lite0_forward_equals_the_packages_own_forward():
    backbone = load_backbone("", "cpu", "float32")
    assert isinstance(backbone, LiteBackbone)
    pixels = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32))
    with torch.inference_mode():
        states, logits = backbone.forward(pixels)
        np.testing.assert_allclose(logits.numpy(), backbone.model(pixels).numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(states[-1].numpy(), backbone.model.extract_features(pixels).numpy(), atol=1e-4)
    assert [tuple(s.shape[1:]) for s in states] == [(c, h, h) for _, _, c, h in LITE0_LAYERS]


def test_lite0_classes_the_cat_photo_as_a_cat(tmp_path):
    """The real ImageNet weights, through the extractor's own reading and preprocessing, on scikit-image's photos."""
    from skimage import data  # in the test extra: never skipped
    expected = {"chelsea": IMAGENET_CATS, "coffee": [967], "rocket": [657, 744]}  # espresso; missile, projectile
    paths = []
    for name in expected:
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(getattr(data, name)()).save(paths[-1])
    logits = lite0_logits(paths)
    assert logits.shape == (3, 1000)
    for (name, classes), row in zip(expected.items(), logits):
        assert int(np.argmax(row)) in classes, (name, np.argsort(row)[::-1][:5])
    probability = np.exp(logits[0] - logits[0].max())
    assert probability[list(IMAGENET_CATS)].sum() / probability.sum() > 0.7


def test_lite0_preprocessing_crops_the_centre_and_scales_to_plus_minus_one():
    image = Image.new("RGB", (400, 256), "black")
    image.paste(Image.new("RGB", (240, 224), "white"), (80, 16))  # black 16 px at the top and bottom, 80 at the sides
    pixels = lite_pixels([image])
    assert pixels.shape == (1, 3, 224, 224) and pixels.dtype == np.float32
    # the centred crop is 224/256 of the shorter side: exactly the white rectangle's height, inside its width
    np.testing.assert_allclose(pixels, (255 - 127) / 128, atol=1e-5)
    shifted = Image.new("RGB", (400, 256), "black")
    shifted.paste(Image.new("RGB", (240, 224), "white"), (80, 17))  # now the crop's top row is black
    assert lite_pixels([shifted])[0, :, 0].max() < 0 < lite_pixels([shifted])[0, :, 1:].min()
    np.testing.assert_allclose(lite_pixels([Image.new("RGB", (10, 10), "black")]), -127 / 128)


def test_lite0_default_extraction_names_its_layers(photos):
    features = CNN(layers="0,3,-1", pooling="grid2").extract(as_images(photos[:2]))
    assert {k: v.shape for k, v in features.spaces.items()} == {"L0": (2, 128), "L3": (2, 160), "L8": (2, 5120)}
    info = features.info["VisionModel"]
    assert info["Model"].startswith("efficientnet-lite0") and info["Parameters"] == 4_652_008
    assert info["InputSize"] == [224, 224] and info["LayerShapes"]["L3"] == [40, 28, 28]
    assert features.columns["L8"][-1] == "c1279y1x1" and features.columns["L8"] == column_names(1280, "grid2")


# --------------------------------------------------------------------------- plugin discovery and the core


def test_found_through_its_entry_point():
    extractor, about = load_plugin("cnn:layers=2;pooling=grid2")
    assert isinstance(extractor, CNN) and about["Distribution"] == "bids-encoding-cnn"
    assert (extractor.layers, extractor.pooling, extractor.model) == ("2", "grid2", "")
    assert CNN.modality == "image"


def test_through_the_core_on_a_runs_events(tiny_resnet, faces):
    """The images an events file names (stim_file under the stimuli folder), read and run as the host does."""
    events, stimuli_dir = faces
    images = stimuli_from_events(events, stimuli_dir)["image"]
    assert len(images) == 40 and all(path.is_absolute() and path.is_file() for path in images.path)
    spec = f"cnn:model={tiny_resnet};layers=-1;pooling=grid3"
    features = extract_features(spec, images)
    assert features.spaces["L4"].shape == (40, 32 * 9)
    assert load_plugin(spec)[1]["Distribution"] == "bids-encoding-cnn"
    assert features.info["VisionModel"]["DistinctImages"] == 40
    np.testing.assert_array_equal(features.onset, images.onset)
    again = extract_features(spec, images)
    np.testing.assert_allclose(again.spaces["L4"], features.spaces["L4"])


@pytest.mark.slow
def test_lite0_features_tell_drawn_faces_from_scrambled_ones(faces):
    """Real features of drawn faces and scrambled ones: nearest class mean, leave one out, over the head's features."""
    found = stimuli_from_events(*faces)
    values = extract_features("cnn:layers=-1", found["image"]).spaces["L8"]
    labels = np.array(found["trials"].trial_type) == "face"
    assert len(values) == len(labels) == 40 and labels.sum() == 20
    correct = 0
    for i in range(len(values)):
        keep = np.arange(len(values)) != i
        means = [values[keep & (labels == k)].mean(0) for k in (False, True)]
        correct += int(np.argmin([np.linalg.norm(values[i] - m) for m in means]) == labels[i])
    assert correct / len(values) > 0.9


# --------------------------------------------------------------------------- errors a user can fix


def test_a_corrupt_or_missing_image_is_named(tiny_resnet, photos, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(photos[0]).read_bytes()[:200])  # truncated
    with pytest.raises(UserError, match="cannot be read") as corrupt:
        CNN(model=tiny_resnet).extract(as_images([photos[1], broken]))
    assert str(broken) in corrupt.value.message and "Replace it with a valid image" in corrupt.value.message
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(UserError, match="cannot be read") as not_image:
        CNN(model=tiny_resnet).extract(as_images([text]))
    assert str(text) in not_image.value.message
    with pytest.raises(UserError, match="does not exist") as missing:
        CNN(model=tiny_resnet).extract(as_images([tmp_path / "gone.png"]))
    assert str(tmp_path / "gone.png") in missing.value.message and "stimuli/" in missing.value.message


def test_a_corrupt_image_through_the_core_names_the_file(tiny_resnet, tmp_path):
    (tmp_path / "stimuli").mkdir()
    Image.new("RGB", (20, 20), "red").save(tmp_path / "stimuli" / "good.png")
    (tmp_path / "stimuli" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    events = tmp_path / "sub-01_task-x_events.tsv"
    events.write_text("onset\tduration\tstim_file\n0\t1\tgood.png\n2\t1\tbad.png\n")
    images = stimuli_from_events(events, tmp_path / "stimuli")["image"]
    with pytest.raises(UserError) as error:
        extract_features(f"cnn:model={tiny_resnet}", images)
    assert str(tmp_path / "stimuli" / "bad.png") in error.value.message


def test_unknown_model_gives_a_clear_error(tmp_path, photos):
    stimuli = as_images(photos[:1])
    with pytest.raises(UserError, match="neither a local folder nor a model in the Hugging Face cache") as missing:
        CNN(model="no-such-org/no-such-vision-model").extract(stimuli)
    assert "never downloads" in missing.value.message and "save_pretrained" in missing.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot be loaded as a Hugging Face vision model") as empty:
        CNN(model=str(tmp_path / "empty")).extract(stimuli)
    assert str(tmp_path / "empty") in empty.value.message and "preprocessor_config.json" in empty.value.message
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"\0")
    with pytest.raises(UserError, match="names a file") as a_file:
        CNN(model=str(weights)).extract(stimuli)
    assert str(weights) in a_file.value.message


def test_model_without_its_image_processor_is_a_clear_error(tiny_resnet, tmp_path, photos):
    import shutil

    folder = tmp_path / "no_processor"
    shutil.copytree(tiny_resnet, folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(UserError, match="image processor") as error:
        CNN(model=str(folder)).extract(as_images(photos[:1]))
    assert str(folder) in error.value.message


@pytest.mark.parametrize("layers", ["5", "-6", "1,9", "x"])
def test_layers_out_of_range_are_a_clear_error(tiny_resnet, photos, layers):
    with pytest.raises(UserError, match=f"layers={layers} does not name layers") as error:
        CNN(model=tiny_resnet, layers=layers).extract(as_images(photos[:1]))
    assert "between 0 and 4" in error.value.message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_resnet, photos):
    with pytest.raises(UserError, match="device=cuda") as error:
        CNN(model=tiny_resnet, device="cuda").extract(as_images(photos[:1]))
    assert "device=cpu" in error.value.message
