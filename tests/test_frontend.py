import numpy as np
import pytest
import soundfile as sf

from tfq_asr.audio import as_float_samples, load_audio
from tfq_asr.errors import UserError
from tfq_asr.frontend import HOP, N_MELS, WIN, IncrementalLogMel, log_mel, num_frames


def speechlike(seconds=2.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(3 * t))) + 0.01 * rng.normal(size=t.size)).astype(np.float32)


@pytest.mark.parametrize("n", [0, 1, 399, 400, 559, 560, 16000, 16001])
def test_frame_count(n):
    assert num_frames(n) == (0 if n < WIN else 1 + (n - WIN) // HOP)
    assert log_mel(np.zeros(n, np.float32) + 0.1).shape == (num_frames(n), N_MELS)


@pytest.mark.parametrize("seed", range(8))
def test_incremental_equals_offline_exactly(seed):
    x = speechlike(1.7, seed)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, x.size), size=rng.integers(1, 80), replace=False))
    chunks = np.split(x, cuts)
    chunks.insert(int(rng.integers(len(chunks))), x[:0])  # an empty chunk anywhere
    inc = IncrementalLogMel()
    out = np.concatenate([inc.accept(c) for c in chunks])
    assert np.array_equal(out, log_mel(x))
    assert inc.frames_emitted == num_frames(x.size)


@pytest.mark.parametrize("seed", range(4))
def test_held_samples_pulled_at_random_points_give_the_same_frames(seed):
    """push/pull (what the streaming recognizer does: compute when a step's worth is in):
    `available` counts exactly the frames `pull` returns, and any pulling yields log_mel's
    frames; a NaN push raises and holds nothing."""
    x = speechlike(1.3, seed)
    rng = np.random.default_rng(seed)
    chunks = np.split(x, np.sort(rng.choice(np.arange(1, x.size), size=40, replace=False)))
    inc, out = IncrementalLogMel(), []
    for c in chunks:
        inc.push(c)
        if rng.random() < 0.3:
            want = inc.available()
            out.append(inc.pull())
            assert len(out[-1]) == want and inc.available() == 0
        with pytest.raises(ValueError, match="NaN"):
            inc.push(np.array([np.nan], np.float32))
    out.append(inc.pull())
    assert np.array_equal(np.concatenate(out), log_mel(x)) and inc.frames_emitted == num_frames(x.size)


def test_mel_taps_are_the_mel_basis_and_frames_do_not_interact():
    """The tapped projection holds every weight of the basis (and nothing else), equals the
    dense product to float64 rounding, and gives a frame the same bits alone or in a batch."""
    from tfq_asr.frontend import _mel_project, _mel_taps, mel_basis
    bins, weights = _mel_taps()
    basis = mel_basis().astype(np.float64)
    rebuilt = np.zeros_like(basis)
    np.add.at(rebuilt, (np.tile(np.arange(N_MELS), weights.shape[0]), bins), weights.reshape(-1))
    np.testing.assert_array_equal(rebuilt, basis)
    power = np.random.default_rng(5).random((37, basis.shape[1])) ** 4
    full = _mel_project(power)
    np.testing.assert_allclose(full, power @ basis.T, rtol=1e-13)
    for i, j in ((0, 1), (3, 4), (5, 36), (36, 37), (0, 37)):
        np.testing.assert_array_equal(_mel_project(power[i:j]), full[i:j])


def test_log_mel_in_blocks_gives_the_frames_of_one_block(monkeypatch):
    """log_mel computes long audio a block of frames at a time (its float64 temporaries of a
    whole 10-minute recording took 2 GB); the frames are those of one pass, bit for bit."""
    import tfq_asr.frontend as fe
    audio = (np.random.default_rng(7).normal(size=16000 * 3 + 123) * 0.1).astype(np.float32)
    monkeypatch.setattr(fe, "BLOCK_FRAMES", 10**9)
    whole = fe.log_mel(audio)
    for block in (1, 7, 100, len(whole) - 1):
        monkeypatch.setattr(fe, "BLOCK_FRAMES", block)
        np.testing.assert_array_equal(fe.log_mel(audio), whole)


def test_one_sample_at_a_time():
    x = speechlike(0.1, 3)
    inc = IncrementalLogMel()
    out = np.concatenate([inc.accept(x[i:i + 1]) for i in range(x.size)])
    assert np.array_equal(out, log_mel(x))


def test_reset_and_nan():
    inc = IncrementalLogMel()
    inc.accept(speechlike(0.5))
    inc.reset()
    assert inc.frames_emitted == 0
    with pytest.raises(ValueError, match="NaN"):
        inc.accept(np.array([0.0, np.nan], np.float32))


def test_silence_is_finite():
    assert np.isfinite(log_mel(np.zeros(4000, np.float32))).all()


def test_loads_stereo_22k_wav_and_flac(tmp_path):
    x = speechlike(1.0)
    stereo = np.stack([x, -x], axis=1)[::1]
    wav = tmp_path / "s.wav"
    sf.write(wav, np.stack([np.interp(np.arange(22050) * 16000 / 22050, np.arange(16000), x)] * 2, 1), 22050)
    flac = tmp_path / "m.flac"
    sf.write(flac, stereo, 16000, format="FLAC")
    a = load_audio(wav)
    assert a.dtype == np.float32 and a.ndim == 1 and abs(a.size - 16000) <= 2
    b = load_audio(flac)
    assert b.size == 16000 and np.abs(b).max() < 1e-4  # x and -x mix down to silence


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="not found.*nope.wav"):
        load_audio(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(UserError, match="empty.*empty.wav"):
        load_audio(empty)
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="cannot read.*junk.flac"):
        load_audio(junk)


def test_integer_pcm_is_scaled_as_libsndfile_reads_it(tmp_path):
    pcm = np.array([-32768, -16384, 0, 1, 32767], np.int16)
    wav = tmp_path / "pcm.wav"
    sf.write(wav, pcm, 16000, subtype="PCM_16")
    got = as_float_samples(pcm)
    assert got.dtype == np.float32 and np.array_equal(got, load_audio(wav))
    assert got[0] == -1.0 and got[2] == 0.0
    np.testing.assert_array_equal(as_float_samples(np.array([0, 128, 255], np.uint8)), [-1.0, 0.0, 127 / 128])
    assert as_float_samples(np.array([-(2 ** 31)], np.int32))[0] == -1.0
    floats = np.array([0.25, -2.0], np.float64)  # floats keep their values, beyond [-1, 1] too
    assert np.array_equal(as_float_samples(floats), floats.astype(np.float32))
    with pytest.raises(ValueError, match="dtype bool"):
        as_float_samples(np.array([True, False]))
