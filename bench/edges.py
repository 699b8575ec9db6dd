"""What musicnn's window edges are worth: its outputs with the edges' zero padding kept, or with
real context from the stream instead, against the original model's reference outputs.

A streaming encoder could compute each mel frame's features once and for good if a frame's
features did not depend on the window around it; in musicnn they do, near the edges (each
window is zero-padded: 3 frames for the timbral convolutions, up to 64 for the temporal ones,
3 per mid-end layer).  Three ways to encode the reference clips' non-overlapping windows:

  exact      every window encoded whole, as musicnn does (what the engine computes)
  timbral    the timbral front end (84 % of the FLOPs) from the continuous stream, the rest per window
  stream     the whole front and mid end from the continuous stream; each window only pools

Each is scored as the port's fidelity test scores it (tests/models/test_musicnn.py): the largest
difference of a window's tag probability and of a clip-averaged one from the original's (bound
0.02), and whether the clip's top-5 tags are the original's.  Reference outputs:
../shared/data/reference/musicnn/.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from bench.harness import REPO

SHARED = REPO.parent / "shared" / "data"
MODES = ("exact", "timbral", "stream")


def encode(model, mel, mode: str):
    """(n windows, 200) embeddings of ``mel``'s non-overlapping windows, encoded as ``mode`` says."""
    import torch

    from models.musicnn import SEGMENT_FRAMES, TIMBRAL_BLOCKS

    n = mel.shape[1] // SEGMENT_FRAMES
    spans = [slice(w * SEGMENT_FRAMES, (w + 1) * SEGMENT_FRAMES) for w in range(n)]
    if mode == "exact":
        return model.encode(torch.stack([mel[:, s] for s in spans]))
    x = model.bn_input(mel[None, None, :, : n * SEGMENT_FRAMES])
    if mode == "timbral":
        timbral = torch.cat([b.folded(x) for b in model.front[:TIMBRAL_BLOCKS]], dim=1)
        temporal = model.front[TIMBRAL_BLOCKS:]  # per window, with its zero padding
        return torch.cat(
            [
                model.back(torch.cat([timbral[..., s], *(b.folded(x[..., s]) for b in temporal)], dim=1))
                for s in spans
            ]
        )
    front = torch.cat([b.folded(x) for b in model.front], dim=1)
    features = model.mid_features(front)
    # musicnn's back end on each window's span of the stream's features
    out = [model.pool_features(features[..., s]) for s in spans]
    return torch.cat(out)


def run(args, parser) -> int:
    import soundfile as sf
    import torch

    import models
    from models.frontend import MelFrontend

    folder = SHARED / "reference" / "musicnn"
    if not folder.is_dir():
        parser.exit(2, f"error: the reference outputs are missing: {folder}\n")
    print("mode      model         worst window |d|  worst clip |d|  clips with the original's top 5")
    for variant in ("msd", "mtt"):
        ref = np.load(folder / f"{variant.upper()}_musicnn.npz")
        model = models.build(f"musicnn-{variant}").eval()
        mels = []
        for rel in ref["files"]:
            audio, _ = sf.read(SHARED / rel, dtype="float32")
            with torch.inference_mode():
                mels.append(MelFrontend(model.frontend)(torch.from_numpy(audio)[None])[0])
        for mode in MODES:
            window = clip = 0.0
            same = 0
            for i, mel in enumerate(mels):
                with torch.inference_mode():
                    probs = torch.sigmoid(model.predict(encode(model, mel, mode))["tags"]).numpy()
                expected = ref[f"t{i}"]
                window = max(window, float(np.abs(probs - expected).max()))
                mean, mean_ref = probs.mean(axis=0), expected.mean(axis=0)
                clip = max(clip, float(np.abs(mean - mean_ref).max()))
                same += list(np.argsort(-mean)[:5]) == list(np.argsort(-mean_ref)[:5])
            print(f"{mode:<9} musicnn-{variant:<5} {window:16.4f}  {clip:14.4f}  {same} of {len(mels)}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "edges",
        help="musicnn with its window edges' zero padding, or with real context from the stream, "
        "against the original's outputs",
        description=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=run)


if __name__ == "__main__":
    sys.exit("run it as: python -m bench edges")
