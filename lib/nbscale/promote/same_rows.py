"""Both versions of a canary judged on the same labelled rows. A canary's share of the traffic and the
champion's are different rows: on a few hundred of them, which rows each side happened to get moves
accuracy by more than the guard's margin (a better canary was once rolled back at 0.922 on 60 rows against
0.963 on 140). So each side's labelled requests are also answered by the other side's replica — sent to it
directly, so the front neither counts nor records them — and both versions are scored on the union."""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

REPLAY_ROWS_PER_REQUEST = 2000
REPLAY_TIMEOUT_S = 60.0


@dataclass
class SameRows:
    rows: int
    champion: float  # share right (classes) or mean absolute error (values)
    canary: float


@dataclass
class Labelled:
    """The requests a side served that carried the label column, with each row's truth and served answer."""
    frames: list  # pandas frames, one per request
    truth: list
    answers: list


def labelled_requests(records: list[dict], label_column: str) -> Labelled:
    from ..drift import predicted, request_frame

    found = Labelled([], [], [])
    for record in records:
        frame = request_frame(record["request"])
        if frame is None or label_column not in frame.columns:
            continue
        answers = predicted(record)
        if len(answers) == len(frame):
            found.frames.append(frame)
            truth = frame[label_column]
            found.truth.extend(truth.astype(object).where(truth.notna(), None).tolist())  # a null label (NaN in pandas) has no truth
            found.answers.extend(answers)
    return found


def quality(truth: list, answers: list, task: str) -> tuple[int, float | None]:
    """(rows with both a truth and an answer, share right for classes or mean absolute error for values)."""
    import numpy as np

    pairs = [(t, a) for t, a in zip(truth, answers) if t is not None and a is not None]
    if not pairs:
        return 0, None
    t, a = np.asarray(pairs, dtype=np.float64).T
    return len(pairs), float((np.rint(t) == np.rint(a)).mean()) if task == "classification" else float(np.abs(t - a).mean())


def _both_answered(truth: list, first: list, second: list) -> tuple[list, list, list]:
    """The rows with a truth and an answer from each version (so both are scored on exactly the same rows)."""
    kept = [(t, a, b) for t, a, b in zip(truth, first, second) if t is not None and a is not None and b is not None]
    return [list(column) for column in zip(*kept)] if kept else ([], [], [])


def answers_from(replica_url: str, frames: list) -> list:
    """What the replica at `replica_url` answers for these rows, in order (consecutive frames with the same
    columns go in one request of up to REPLAY_ROWS_PER_REQUEST rows)."""
    import pandas as pd

    from ..drift import predicted_answers

    answers: list = []
    groups: list[list] = []
    for frame in frames:
        if groups and list(groups[-1][0].columns) == list(frame.columns):
            groups[-1].append(frame)
        else:
            groups.append([frame])
    for group in groups:
        rows = pd.concat(group, ignore_index=True)
        for start in range(0, len(rows), REPLAY_ROWS_PER_REQUEST):
            chunk = rows.iloc[start:start + REPLAY_ROWS_PER_REQUEST]
            values = chunk.astype(object).where(chunk.notna(), None).to_numpy().tolist()  # a null as JSON's null, never NaN
            body = json.dumps({"dataframe_split": {"columns": list(chunk.columns), "data": values}}).encode()
            request = urllib.request.Request(f"{replica_url}/invocations", data=body, method="POST",
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=REPLAY_TIMEOUT_S) as answer:
                answered = predicted_answers(json.loads(answer.read()).get("predictions", []))
            if len(answered) != len(chunk):
                raise ValueError(f"{len(answered)} answers to {len(chunk)} rows")
            answers.extend(answered)
    return answers


def compare(champion: Labelled, canary: Labelled, champion_replica: str, canary_replica: str, task: str) -> SameRows:
    """Each version's quality on every labelled row either side served: its own answers where it served the
    row, the other side's rows answered again by it. Raises what the replay raised (OSError, ValueError)."""
    truth, by_champion, by_canary = _both_answered(champion.truth + canary.truth,
                                                   champion.answers + answers_from(champion_replica, canary.frames),
                                                   answers_from(canary_replica, champion.frames) + canary.answers)
    rows, champion_quality = quality(truth, by_champion, task)
    _, canary_quality = quality(truth, by_canary, task)
    return SameRows(rows, champion_quality, canary_quality)
