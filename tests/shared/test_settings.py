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
    """MOFO_TVL1_KERNEL is read where the flow runs (mofo.shared.flow.cuda_kernel): a value given in
    .env is checked at start-up and exported for this process; a bad one stops the start."""
    from mofo.shared.flow import cuda_kernel

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOFO_TVL1_KERNEL", "unset by this test")  # restored after it
    monkeypatch.delenv("MOFO_TVL1_KERNEL")
    (tmp_path / ".env").write_text("MOFO_TVL1_KERNEL=compiled\n")
    settings = Settings()
    assert settings.tvl1_kernel == "compiled"
    assert cuda_kernel() == "triton"  # not yet exported
    settings.export_process_settings()
    assert cuda_kernel() == "compiled"
    monkeypatch.delenv("MOFO_TVL1_KERNEL")  # the environment wins over .env
    (tmp_path / ".env").write_text("MOFO_TVL1_KERNEL=fast\n")
    with pytest.raises(ValidationError, match="tvl1_kernel"):
        Settings()
