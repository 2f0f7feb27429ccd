"""Reconstruction images: patchify in the model's target order, the hidden tokens' predictions
mapped back to pixels, the masked-input row, box outlines to the pixel, the image layout, the
saved PNG, and bad input naming its shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mofo.training.masking import TokenGrid, tube_mask
from mofo.training.models import VideoMAE, config
from mofo.training.visualise import (
    CLIP_GAP,
    GAP,
    GREEN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    patchify,
    reconstruct,
    reconstruction_image,
    save_reconstructions,
    unpatchify,
)

TINY = config("vit_tiny_patch8_tubelet2_32px")
GRID = TINY.grid  # 4 x 32 x 32, tubelet 2, patch 8: 2 x 4 x 4 = 32 tokens of 2·8·8·3 = 384 pixels
PER_TOKEN = 2 * 8 * 8 * 3
SHAPE = (3, GRID.frames, GRID.height, GRID.width)


def _pixels(seed: int = 0) -> torch.Tensor:
    """A clip of [0, 1] pixels (C, T, H, W)."""
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(seed))


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return (pixels - mean) / std


def _mask(seed: int = 0) -> torch.Tensor:
    return tube_mask(1, GRID, 0.75, torch.Generator().manual_seed(seed))[0]  # 3 of 4 cells / slot


def _perfect(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What a perfect model predicts: the hidden tokens' targets."""
    return VideoMAE(TINY).targets(video[None])[0][mask]


def test_unpatchify_inverts_patchify_exactly():
    assert TokenGrid(4, 32, 32, 8, 2) == GRID
    video = _pixels()
    tokens = patchify(video, GRID)
    assert tokens.shape == (GRID.tokens, PER_TOKEN)
    assert torch.equal(unpatchify(tokens, GRID), video)


def test_patchify_orders_tokens_time_row_column():
    video = torch.zeros(SHAPE)
    video[1, 2, 8:16, 24:32] = 1.0  # channel 1, frame 2 (slot 1), row 1, column 3
    tokens = patchify(video, GRID)
    token = 1 * 16 + 1 * 4 + 3
    assert tokens.abs().sum(1).nonzero().flatten().tolist() == [token]
    per_channel = tokens[token].view(2, 8, 8, 3)  # tubelet frame, row, column, channel
    assert per_channel[0, :, :, 1].sum() == 64 and per_channel.sum() == 64


def test_patchify_normalised_per_token_and_channel_is_the_models_targets():
    video = _normalise(_pixels())
    x = patchify(video, GRID).view(GRID.tokens, -1, 3)
    normalised = (x - x.mean(1, keepdim=True)) / (x.var(1, keepdim=True).sqrt() + 1e-6)
    targets = VideoMAE(TINY).targets(video[None])[0]
    torch.testing.assert_close(normalised.flatten(1), targets, rtol=0, atol=1e-6)


def test_a_perfect_prediction_rebuilds_the_original():
    pixels, mask = _pixels(), _mask()
    video = _normalise(pixels)
    original, _, rebuilt = reconstruct(video, mask, _perfect(video, mask), GRID)
    torch.testing.assert_close(original, pixels, rtol=0, atol=1e-6)
    torch.testing.assert_close(rebuilt, pixels, rtol=0, atol=1e-4)
    assert rebuilt.min() >= 0 and rebuilt.max() <= 1


def test_a_wrong_prediction_changes_only_the_hidden_patches():
    video, mask = _normalise(_pixels()), _mask()
    original, _, rebuilt = reconstruct(video, mask, torch.zeros(int(mask.sum()), PER_TOKEN), GRID)
    hidden = unpatchify(mask[:, None].expand(-1, PER_TOKEN).float(), GRID).bool()
    assert torch.equal(rebuilt[~hidden], original[~hidden])
    # Zeros are each hidden tubelet's mean: flat patches, far from the noisy original.
    assert (rebuilt[hidden] - original[hidden]).abs().mean() > 0.1
    x = patchify(original, GRID).view(GRID.tokens, -1, 3)[mask]
    flat = patchify(rebuilt, GRID).view(GRID.tokens, -1, 3)[mask]
    torch.testing.assert_close(flat, x.mean(1, keepdim=True).expand_as(flat))


def test_the_masked_input_shows_fill_where_hidden_and_the_original_elsewhere():
    video, mask = _normalise(_pixels()), _mask()
    pred = torch.zeros(int(mask.sum()), PER_TOKEN)
    original, masked, _ = reconstruct(video, mask, pred, GRID, fill=0.25)
    tokens = patchify(masked, GRID)
    assert (tokens[mask] == 0.25).all()
    assert torch.equal(tokens[~mask], patchify(original, GRID)[~mask])


def test_reconstruct_agrees_across_devices(device):
    video, mask = _normalise(_pixels()), _mask()
    pred = torch.randn(int(mask.sum()), PER_TOKEN, generator=torch.Generator().manual_seed(1))
    on_cpu = reconstruct(video, mask, pred, GRID)
    on_device = reconstruct(video.to(device), mask.to(device), pred.to(device), GRID)
    for a, b in zip(on_cpu, on_device, strict=True):
        assert b.device.type == device.type
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-5)


def _grey_clip() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A flat grey clip (no green in it), a mask and a prediction."""
    mask = _mask()
    video = _normalise(torch.full(SHAPE, 0.5))
    return video, mask, torch.zeros(int(mask.sum()), PER_TOKEN)


def test_image_is_three_rows_by_the_frames_with_gaps():
    video, mask, pred = _grey_clip()
    image = reconstruction_image(video, mask, pred, GRID, scale=2)
    assert image.mode == "RGB"
    assert image.size == (4 * 64 + 3 * GAP, 3 * 64 + 2 * GAP)  # (width, height)
    image = reconstruction_image(video, mask, pred, GRID, scale=3, frames=2)
    assert image.size == (2 * 96 + GAP, 3 * 96 + 2 * GAP)


def test_image_cells_are_the_frames_upscaled_nearest():
    pixels, mask = _pixels(), _mask()
    video = _normalise(pixels)
    image = np.asarray(reconstruction_image(video, mask, _perfect(video, mask), GRID, frames=2))
    expected = (pixels * 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    expected = expected.repeat(2, axis=1).repeat(2, axis=2)  # (T, 64, 64, 3)
    assert np.array_equal(image[:64, :64], expected[0])  # original row, first frame
    assert np.array_equal(image[:64, 64 + GAP :], expected[3])  # the last frame of two
    assert (image[:, 64 : 64 + GAP] == 255).all() and (image[64 : 64 + GAP] == 255).all()
    rebuilt = image[2 * (64 + GAP) :, :64].astype(int)
    assert np.abs(rebuilt - expected[0]).max() <= 1  # the perfect reconstruction


def test_image_draws_the_box_only_on_valid_frames():
    video, mask, pred = _grey_clip()
    boxes = torch.tensor([[4.0, 4.0, 20.0, 12.0]] * GRID.frames)
    valid = torch.tensor([True, False, True, False])
    image = np.asarray(reconstruction_image(video, mask, pred, GRID, boxes, valid, scale=2))
    green = (image == GREEN).all(-1)
    for row in range(3):
        for column in range(4):
            cell = green[row * (64 + GAP) :, column * (64 + GAP) :][:64, :64]
            assert cell.any() == bool(valid[column])
            if valid[column]:  # the box at twice the size: corners (8, 8) and (39, 23)
                assert (
                    cell[8, 8] and cell[23, 39] and not cell[24:].any() and not cell[:, 40:].any()
                )


def test_save_writes_the_first_clips_as_one_png(tmp_path):
    video, mask, pred = _grey_clip()
    videos, masks, preds = video.expand(3, *SHAPE), mask.expand(3, -1), pred.expand(3, -1, -1)
    path = save_reconstructions(
        tmp_path / "a" / "b" / "recon.png",
        videos,
        masks,
        preds,
        GRID,
        boxes=torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 3),
        valid=torch.ones(3, dtype=torch.bool),
        count=2,
    )
    assert path == tmp_path / "a" / "b" / "recon.png" and path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size == (4 * 64 + 3 * GAP, 2 * (3 * 64 + 2 * GAP) + CLIP_GAP)
        assert (np.asarray(image) == GREEN).all(-1).any()


def test_save_takes_the_models_own_output(tmp_path):
    torch.manual_seed(0)
    model = VideoMAE(TINY)
    videos = _normalise(torch.rand(2, *SHAPE))
    masks = tube_mask(2, GRID, 0.75, torch.Generator().manual_seed(0))
    _, preds = model(videos, masks)  # preds need grad: saving detaches them
    path = save_reconstructions(tmp_path / "recon.png", videos, masks, preds.half(), GRID)
    with Image.open(path) as image:
        assert image.size == (4 * 64 + 3 * GAP, 2 * (3 * 64 + 2 * GAP) + CLIP_GAP)


def test_bad_input_raises_naming_the_shape():
    video, mask, pred = _grey_clip()
    with pytest.raises(ValueError, match=r"mask must be \(32,\), got \(31,\)"):
        reconstruct(video, mask[:31], pred, GRID)
    with pytest.raises(ValueError, match=r"pred must be \(24, 384\) .* got \(23, 384\)"):
        reconstruct(video, mask, pred[:23], GRID)
    with pytest.raises(ValueError, match=r"got \(3, 4, 32, 16\)"):
        reconstruct(video[..., :16], mask, pred, GRID)
    with pytest.raises(ValueError, match=r"tokens must be \(32, 384\), got \(32, 383\)"):
        unpatchify(torch.zeros(32, 383), GRID)
    with pytest.raises(ValueError, match=r"boxes must be \(4, 4\) or \(4,\), got \(3, 4\)"):
        reconstruction_image(video, mask, pred, GRID, boxes=torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"got \(1, 3, 4, 32, 32\), \(32,\) and \(1, 24, 384\)"):
        save_reconstructions("unused.png", video[None], mask, pred[None], GRID)
