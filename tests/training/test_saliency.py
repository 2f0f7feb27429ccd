"""Grad-CAM saliency maps and the evaluation pictures: the map of a model whose answer is known
by hand, the colours, and the images with their boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mofo.training.classifier import ClassifierConfig, VideoClassifier
from mofo.training.models import config
from mofo.training.saliency import grad_cam, heat_colours, saliency_image, save_saliency, upsample
from mofo.training.visualise import GAP, GREEN, confusion_image

TINY = config("vit_tiny_patch8_tubelet2_32px")  # 4 frames of 32 x 32: a 2 x 4 x 4 token grid


class LinearReadout(nn.Module):
    """Logits = the tokens' mean times W: Grad-CAM of such a model is known by hand."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width, classes))

    def forward(self, tokens, inside):
        return {"action": (tokens @ self.weight).mean(dim=1)}


def test_grad_cam_of_a_linear_readout_is_each_tokens_share_of_the_logit():
    """After block 1 (of 2) the model is linear: the gradient of class c's logit is W[:, c] / N
    for every token, so Grad-CAM gives ReLU(A_n · W[:, c]) scaled to a maximum of 1."""
    torch.manual_seed(0)
    model = VideoClassifier(ClassifierConfig(encoder=TINY, classes={"action": 5}, head="mean"))
    model.encoder.blocks[1] = nn.Identity()
    model.encoder.norm = nn.Identity()
    model.head = LinearReadout(TINY.width, 5)
    video = torch.randn(2, 3, 4, 32, 32)
    boxes, valid = torch.zeros(2, 4, 4), torch.zeros(2, 4, dtype=torch.bool)

    cam, target = grad_cam(model, video, boxes, valid, "action", layer=1)
    with torch.no_grad():
        tokens = model.encoder.tokens(video)
        tokens = model.encoder.blocks[0](tokens)
        logits = (tokens @ model.head.weight).mean(dim=1)
    assert target.tolist() == logits.argmax(1).tolist()
    expected = torch.stack(
        [torch.relu(tokens[i] @ model.head.weight[:, target[i]]) for i in range(2)]
    )
    expected = expected / expected.amax(dim=1, keepdim=True)
    assert cam.shape == (2, 2, 4, 4)
    torch.testing.assert_close(cam.flatten(1), expected, atol=1e-5, rtol=1e-4)

    chosen, _ = grad_cam(model, video, boxes, valid, "action", 1, torch.tensor([3, 3]))
    other = torch.relu(tokens[0] @ model.head.weight[:, 3])
    torch.testing.assert_close(chosen[0].flatten(), other / other.max(), atol=1e-5, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())  # nothing left behind
    with pytest.raises(ValueError, match=r"layer must be 1\.\.2"):
        grad_cam(model, video, boxes, valid, "action", layer=0)


def test_grad_cam_on_the_real_classifier_leaves_it_as_it_was():
    torch.manual_seed(1)
    model = VideoClassifier(ClassifierConfig(encoder=TINY, classes={"verb": 4, "noun": 6}))
    model.train()
    video = torch.randn(1, 3, 4, 32, 32)
    boxes = torch.tensor([[[8.0, 8.0, 24.0, 24.0]] * 4])
    valid = torch.ones(1, 4, dtype=torch.bool)
    cam, target = grad_cam(model, video, boxes, valid, "noun", layer=2)
    assert cam.shape == (1, 2, 4, 4) and 0 <= int(target) < 6
    assert float(cam.max()) == pytest.approx(1.0) and float(cam.min()) >= 0.0
    assert model.training and all(p.grad is None for p in model.parameters())


def test_heat_colours_run_from_dark_blue_to_red():
    ramp = heat_colours(np.array([0.0, 0.5, 1.0, 2.0]))
    assert ramp.tolist() == [[0, 0, 128], [0, 255, 255], [255, 0, 0], [255, 0, 0]]


def test_saliency_image_shows_the_box_and_the_map_where_it_is_high(tmp_path):
    video = torch.zeros(3, 4, 32, 32)  # normalised zeros: the ImageNet mean colour
    cam = torch.zeros(2, 4, 4)
    cam[:, 0, 0] = 1.0  # the top-left token of both tubelets
    boxes = torch.tensor([[16.0, 16.0, 30.0, 30.0]] * 4)
    valid = torch.tensor([True, True, False, False])
    image = saliency_image(video, cam, boxes, valid, frames=4, alpha=1.0)
    assert image.shape == (2 * 32 + GAP, 4 * 32 + 3 * GAP, 3) and image.dtype == np.uint8
    top, bottom = image[:32], image[32 + GAP :]
    assert top[16, 20].tolist() == list(GREEN)  # the box's top edge, frame 0
    assert top[16, 3 * (32 + GAP) + 20].tolist() != list(GREEN)  # frame 3: no valid box
    assert bottom[1, 1].tolist() == [255, 0, 0]  # salient corner: red
    assert bottom[28, 10].tolist() == [0, 0, 128]  # nothing there: dark blue
    assert bottom[16, 20].tolist() == [255, 255, 255]  # the box, white over the map
    path = save_saliency(tmp_path / "maps" / "clip.png", [image, image[:, :40]])
    assert np.asarray(Image.open(path)).shape == (2 * image.shape[0] + 4 * GAP, image.shape[1], 3)


def test_upsample_spreads_tokens_over_their_pixels():
    cam = torch.zeros(2, 4, 4)
    cam[1, 3, 3] = 1.0
    pixels = upsample(cam, 4, 32, 32)
    assert pixels.shape == (4, 32, 32)
    assert float(pixels[3, 31, 31]) == pytest.approx(1.0) and float(pixels[0, 0, 0]) == 0.0


def test_confusion_image_rows_are_normalised():
    """Rows normalised, white to dark blue; class labels in a margin on the left (indices, or
    names), none past 40 classes."""
    matrix = torch.tensor([[4, 0, 0], [0, 2, 2], [0, 0, 0]])
    image = np.asarray(confusion_image(matrix, cell=10))
    assert image.shape[0] == 30 and image.shape[1] > 30
    cells = image[:, -30:]
    assert cells[5, 5].tolist() == [8, 48, 107]  # all of row 0 on the diagonal: full blue
    assert cells[15, 15].tolist() == cells[15, 25].tolist() == [132, 152, 181]  # half and half
    assert cells[25, 25].tolist() == cells[5, 15].tolist() == [255, 255, 255]
    assert (image[:, : image.shape[1] - 30] < 128).any()  # the labels' text
    named = confusion_image(matrix, ["pushing left", "right", "up"], cell=10)
    assert named.height == 30 and named.width > image.shape[1]
    many = confusion_image(torch.eye(50, dtype=torch.int64), cell=2)
    assert many.size == (100, 100)
    with pytest.raises(ValueError, match="square"):
        confusion_image(torch.zeros(2, 3))
