"""The settings object: defaults need nothing; unsafe or impossible values are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mofo.shared.params import DecodeLimits, FlowParams, MotionParams
from mofo.shared.settings import Settings


def test_defaults_are_the_embedded_service(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    for key in [k for k in __import__("os").environ if k.startswith("MOFO_")]:
        monkeypatch.delenv(key)
    s = Settings()
    assert s.redis_url is None and s.data_root is None
    assert s.device == "auto" and s.backend == "auto"
    limits = s.decode_limits()
    assert isinstance(limits, DecodeLimits) and limits.max_bytes == s.max_upload_bytes


def test_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("MOFO_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("MOFO_REDIS_URL", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("MOFO_MAX_PENDING", "3")
    s = Settings()
    assert s.data_root == tmp_path.resolve()
    assert s.redis_url == "redis://127.0.0.1:6379/2"
    assert s.max_pending == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data_root": "/"}, "data root must not be the filesystem root"),
        ({"data_root": "/no/such/folder"}, "is not an existing folder"),
        ({"redis_url": "http://x"}, "redis URL must start with redis://"),
        ({"max_upload_bytes": 0}, "greater than or equal to 1"),
        ({"max_upload_bytes": DecodeLimits.max_bytes + 1}, "less than or equal to"),
        ({"max_pending": 0}, "greater than or equal to 1"),
        ({"backend": "cuda"}, "Input should be 'auto', 'opencv' or 'torch'"),
        ({"queue_name": "a b"}, "String should match pattern"),
        ({"tvl1_kernel": "cudnn"}, "Input should be 'triton' or 'compiled'"),
    ],
)
def test_unsafe_values_are_refused(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**kwargs)


def test_params_round_trip_through_a_dict():
    params = MotionParams(short_side=112, num_frames=8, flow=FlowParams(stopping="fixed"))
    again = MotionParams.from_dict(params.to_dict())
    assert again == params and again.hash() == params.hash()


def test_the_tvl1_kernel_from_dotenv_reaches_the_flow(monkeypatch, tmp_path):
    """MOFO_TVL1_KERNEL (here from .env) is checked at start-up and set on every flow the
    service's batcher runs (FlowParams.cuda_kernel), whatever kernel a request's params name;
    nothing goes through the process's environment. A bad one stops the start."""
    import os

    import torch

    import mofo.shared.batcher as batcher_module
    from mofo.services.motion_api.service import MotionService

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOFO_TVL1_KERNEL", "unset by this test")  # restored after it
    monkeypatch.delenv("MOFO_TVL1_KERNEL")
    (tmp_path / ".env").write_text("MOFO_TVL1_KERNEL=compiled\n")
    settings = Settings(device="cpu")
    assert settings.tvl1_kernel == "compiled"
    seen = []
    real = batcher_module.optical_flow

    def spy(i0, i1, params, backend):
        seen.append(params.cuda_kernel)
        return real(i0, i1, params, backend)

    monkeypatch.setattr(batcher_module, "optical_flow", spy)
    service = MotionService(settings)
    try:
        gray = torch.rand(3, 1, 24, 32) * 255
        small = MotionParams(backend="torch", flow=FlowParams(scales=1, warps=1))
        flow = service.batcher.flow(gray, [0, 1], [1, 2], small)
    finally:
        service.close()
    assert flow.shape == (2, 2, 24, 32)
    assert seen == ["compiled"] and small.flow.cuda_kernel == "triton"
    assert "MOFO_TVL1_KERNEL" not in os.environ
    (tmp_path / ".env").write_text("MOFO_TVL1_KERNEL=fast\n")
    with pytest.raises(ValidationError, match="tvl1_kernel"):
        Settings()
