r"""Readers for the public pre-extracted feature layouts of video anomaly
detection (UCF-Crime, XD-Violence, ShanghaiTech; the documentation's method
page, docs/method.rst, section 5).

Features: one :obj:`.npy` per video and per view,
:obj:`<root>/<view>/<video><suffix>.npy`, of shape :math:`(T, D)` or ten-crop
:math:`(crops, T, D)`, or one file per crop,
:obj:`<video><suffix>__<c>.npy`. Ground truth: UCF-Crime's
:obj:`Temporal_Anomaly_Annotation.txt`, XD-Violence's :obj:`annotations.txt`,
a folder of per-video frame-label arrays, or one concatenated frame-label
array. Every bad file raises an error that names it; nothing is skipped.
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from pyg_lego.vad.video import FRAMES_PER_SNIPPET, Video

PathLike = Union[str, os.PathLike]

#: Extensions stripped from names in list and annotation files (names such
#: as XD-Violence's may contain other dots).
KNOWN_EXTENSIONS = ('.npy', '.mp4', '.avi', '.mkv', '.webm', '.mov')

#: UCF-Crime's anomaly classes (video names start with them).
UCF_CLASSES = ('Abuse', 'Arrest', 'Arson', 'Assault', 'Burglary',
               'Explosion', 'Fighting', 'RoadAccidents', 'Robbery',
               'Shooting', 'Shoplifting', 'Stealing', 'Vandalism')


class FeatureFileError(ValueError):
    r"""A feature, list or ground-truth file that cannot be used; the message
    starts with the file's path (also in :obj:`path`)."""
    def __init__(self, path: PathLike, problem: str):
        self.path = str(path)
        super().__init__(f"{path}: {problem}")


@dataclass
class Annotation:
    r"""Temporal ground truth of one video from an annotation text file:
    anomalous frame intervals :obj:`[start, end)` and the event class when
    the file gives one (UCF-Crime)."""
    intervals: List[Tuple[int, int]]
    category: Optional[str]
    source: str = ''


def _strip_extension(name: str) -> str:
    for ext in KNOWN_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[:-len(ext)]
    return name


def _is_int(token: str) -> bool:
    return re.fullmatch(r'-?\d+', token) is not None


def read_annotations(path: PathLike) -> Dict[str, Annotation]:
    r"""Reads a temporal annotation text file, either UCF-Crime's
    :obj:`Temporal_Anomaly_Annotation.txt` (:obj:`name class s1 e1 s2 e2`,
    :obj:`-1` marks an absent interval) or XD-Violence's
    :obj:`annotations.txt` (:obj:`name s1 e1 [s2 e2 ...]`). Frame numbers
    are 0-based; an interval covers frames :obj:`s <= f < e`, as the field's
    ground-truth scripts build it. Video names lose their directory and a
    video extension (:obj:`.mp4`, ...).

    Returns:
        :obj:`{video: Annotation}`.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FeatureFileError(path, f"cannot read the annotation file "
                               f"({e})") from e
    out: Dict[str, Annotation] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith('#'):
            continue
        where = f"line {lineno} ({line.strip()!r})"
        name = _strip_extension(os.path.basename(tokens[0]))
        rest = tokens[1:]
        category = None
        if rest and not _is_int(rest[0]):
            category, rest = rest[0], rest[1:]
        if not all(_is_int(t) for t in rest):
            raise FeatureFileError(path, f"{where}: expected integer frame "
                                   f"numbers after the name"
                                   f"{' and class' if category else ''}")
        if len(rest) % 2 or (category is None and not rest):
            raise FeatureFileError(path, f"{where}: expected pairs of start "
                                   f"and end frames, got {len(rest)} "
                                   f"number(s)")
        intervals = []
        for s, e in zip(map(int, rest[::2]), map(int, rest[1::2])):
            if s == -1 and e == -1:
                continue
            if s < 0 or e <= s:
                raise FeatureFileError(path, f"{where}: interval ({s}, {e}) "
                                       f"is not 0 <= start < end")
            intervals.append((s, e))
        if name in out:
            raise FeatureFileError(path, f"{where}: video '{name}' is "
                                   f"annotated twice (first at "
                                   f"{out[name].source})")
        out[name] = Annotation(intervals, category, f"line {lineno}")
    if not out:
        raise FeatureFileError(path, "no annotations found")
    return out


def label_from_name(name: str) -> Optional[int]:
    r"""The label a public video name implies: :obj:`0` for UCF-Crime's
    :obj:`Normal...` and XD-Violence's :obj:`..._label_A...`, :obj:`1` for
    UCF-Crime's anomaly classes and XD-Violence's other labels, :obj:`None`
    when the name says nothing (ShanghaiTech)."""
    if name.startswith('Normal'):
        return 0
    if '_label_' in name:
        return 0 if '_label_A' in name else 1
    if any(re.match(rf'{c}\d', name) for c in UCF_CLASSES):
        return 1
    return None


@dataclass
class _Entry:
    name: str
    label: Optional[int] = None
    source: str = ''
    files: Dict[str, List[Path]] = field(default_factory=dict)


def _read_list(path: PathLike, strip) -> List[_Entry]:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FeatureFileError(path, f"cannot read the list file ({e})") \
            from e
    entries: Dict[str, _Entry] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = [t for t in re.split(r'[,\s]+', line.strip()) if t]
        if not tokens or tokens[0].startswith('#'):
            continue
        where = f"line {lineno} ({line.strip()!r})"
        if len(tokens) > 2 or (len(tokens) == 2 and tokens[1] not in ('0',
                                                                      '1')):
            raise FeatureFileError(path, f"{where}: expected '<video or "
                                   f"path> [0|1]'")
        name = strip(tokens[0])
        label = int(tokens[1]) if len(tokens) == 2 else None
        seen = entries.get(name)
        if seen is None:
            entries[name] = _Entry(name, label, f"{path}, {where}")
        elif label is not None and seen.label not in (None, label):
            raise FeatureFileError(path, f"{where}: video '{name}' is listed "
                                   f"with label {label} but also with "
                                   f"{seen.label}")
        elif label is not None:
            seen.label = label
    if not entries:
        raise FeatureFileError(path, "the list names no videos")
    return list(entries.values())


class FeatureFolder:
    r"""Pre-extracted snippet features in the public layout, one folder per
    view.

    Each video has, in each view's folder, either one file
    :obj:`<video><suffix>.npy` of shape :math:`(T, D)` or
    :math:`(crops, T, D)`, or one file per crop
    :obj:`<video><suffix><sep><c>.npy` (:math:`c = 0, 1, \ldots`) of shape
    :math:`(T, D)` (UCF-Crime has 10 crops, XD-Violence 5). Widths are
    checked per view across all videos, and views of one video must agree on
    :math:`T`.

    Args:
        root (str or Mapping[str, str]): A folder with one sub-folder per
            view, or view name -> folder.
        views (Sequence[str], optional): Views to read; every sub-folder of
            :obj:`root` (sorted), or every key of the mapping, if
            :obj:`None`.
        crops (str or int, optional): Crops: :obj:`"mean"` averages them
            (the usual test-time choice), an :obj:`int` takes that crop,
            :obj:`"all"` makes one :class:`Video` per crop, named
            :obj:`<video>__<c>` (training augmentation). Views without crops
            are used as they are. (default: :obj:`"mean"`)
        crop_axis (int, optional): Axis of the crops in single-file ten-crop
            arrays: :obj:`0` for :math:`(crops, T, D)`, :obj:`1` for
            :math:`(T, crops, D)` (RTFM's UCF-Crime files). (default: :obj:`0`)
        crop_sep (str, optional): Separator before the crop number in
            per-crop file names, :obj:`"__"` or :obj:`"_"`.
            (default: :obj:`"__"`)
        name_suffix (str or Mapping[str, str], optional): What feature file
            names add after the video name (e.g. :obj:`"_i3d"`, or per view
            :obj:`{'audio': '__vggish'}`). (default: :obj:`""`)
        widths (Mapping[str, int], optional): Expected width per view; else
            the first video read sets it.
        frames_per_snippet (int, optional): (default: :obj:`16`)
        align (str, optional): When views of one video differ in
            :math:`T`: :obj:`"error"`, or :obj:`"trim"` to the shortest.
            (default: :obj:`"error"`)
    """
    def __init__(self, root: Union[PathLike, Mapping[str, PathLike]],
                 views: Optional[Sequence[str]] = None,
                 crops: Union[str, int] = 'mean', crop_axis: int = 0,
                 crop_sep: str = '__',
                 name_suffix: Union[str, Mapping[str, str]] = '',
                 widths: Optional[Mapping[str, int]] = None,
                 frames_per_snippet: int = FRAMES_PER_SNIPPET,
                 align: str = 'error'):
        if isinstance(root, Mapping):
            dirs = {v: Path(p) for v, p in root.items()}
            views = list(dirs) if views is None else list(views)
            missing = [v for v in views if v not in dirs]
            if missing:
                raise ValueError(f"no folder given for view(s) {missing}")
            dirs = {v: dirs[v] for v in views}
        else:
            base = Path(root)
            if not base.is_dir():
                raise FeatureFileError(base, "feature root is not a folder")
            if views is None:
                views = sorted(p.name for p in base.iterdir() if p.is_dir())
                if not views:
                    raise FeatureFileError(base, "has no view sub-folders "
                                           "(expected <root>/<view>/*.npy)")
            dirs = {v: base / v for v in views}
        for v, d in dirs.items():
            if not d.is_dir():
                raise FeatureFileError(d, f"folder of view '{v}' does not "
                                       f"exist")
        if not (crops in ('mean', 'all') or (isinstance(crops, int)
                                              and crops >= 0)):
            raise ValueError(f"crops must be 'mean', 'all' or a crop index "
                             f">= 0, got {crops!r}")
        if crop_axis not in (0, 1):
            raise ValueError(f"crop_axis must be 0 (crops, T, D) or 1 "
                             f"(T, crops, D), got {crop_axis!r}")
        if crop_sep not in ('__', '_'):
            raise ValueError(f"crop_sep must be '__' or '_', got "
                             f"{crop_sep!r}")
        if align not in ('error', 'trim'):
            raise ValueError(f"align must be 'error' or 'trim', got "
                             f"{align!r}")
        self.dirs = dirs
        self.views = list(dirs)
        self.crops = crops
        self.crop_axis = crop_axis
        self.crop_sep = crop_sep
        self.suffix = ({v: name_suffix.get(v, '') for v in self.views}
                       if isinstance(name_suffix, Mapping)
                       else {v: name_suffix for v in self.views})
        self.frames_per_snippet = frames_per_snippet
        self.align = align
        # View -> (width, file that set it), shared by every load so that
        # train and test sets agree.
        self._width: Dict[str, Tuple[int, str]] = {
            v: (int(w), 'widths') for v, w in (widths or {}).items()}
        self._crop_re = re.compile(rf'^(.*){re.escape(crop_sep)}(\d+)$')
        self._index: Dict[str, Dict[str, List[int]]] = {}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(views={self.views}, '
                f'crops={self.crops!r})')

    # Names ---------------------------------------------------------------
    def _strip(self, entry: str) -> str:
        name = _strip_extension(os.path.basename(entry.strip()))
        m = self._crop_re.match(name)
        if m:
            name = m.group(1)
        for suffix in sorted(set(self.suffix.values()), key=len,
                             reverse=True):
            if suffix and name.endswith(suffix):
                return name[:-len(suffix)]
        return name

    def _crop_index(self, view: str) -> Dict[str, List[int]]:
        if view not in self._index:
            index: Dict[str, List[int]] = {}
            for f in os.listdir(self.dirs[view]):
                if f.endswith('.npy'):
                    m = self._crop_re.match(f[:-4])
                    if m:
                        index.setdefault(m.group(1), []).append(
                            int(m.group(2)))
            self._index[view] = index
        return self._index[view]

    def video_names(self) -> List[str]:
        r"""Videos found in the first view's folder (sorted)."""
        view = self.views[0]
        suffix = self.suffix[view]
        names = set()
        for f in os.listdir(self.dirs[view]):
            if not f.endswith('.npy'):
                continue
            stem = f[:-4]
            m = self._crop_re.match(stem)
            stem = m.group(1) if m else stem
            if suffix and not stem.endswith(suffix):
                raise FeatureFileError(self.dirs[view] / f, f"does not end "
                                       f"with the name suffix {suffix!r}")
            names.add(stem[:-len(suffix)] if suffix else stem)
        if not names:
            raise FeatureFileError(self.dirs[view], "contains no .npy "
                                   "feature files")
        return sorted(names)

    # Files ---------------------------------------------------------------
    def _files(self, view: str, name: str) -> List[Path]:
        stem = name + self.suffix[view]
        single = self.dirs[view] / f'{stem}.npy'
        crops = sorted(self._crop_index(view).get(stem, []))

        def crop_file(c: int) -> Path:
            return self.dirs[view] / f'{stem}{self.crop_sep}{c}.npy'

        if single.is_file():
            if crops:
                raise FeatureFileError(single, f"is ambiguous: per-crop files "
                                       f"such as {crop_file(crops[0])} exist "
                                       f"for the same video")
            return [single]
        if not crops:
            raise FeatureFileError(single, f"missing: no features of view "
                                   f"'{view}' for video '{name}' (nor "
                                   f"per-crop files {crop_file(0).name}, "
                                   f"...)")
        for c in range(max(crops) + 1):
            if c not in crops:
                raise FeatureFileError(crop_file(c), f"missing: crop {c} of "
                                       f"{max(crops) + 1} of video '{name}'")
        return [crop_file(c) for c in crops]

    def _read(self, path: Path, view: str, allowed_ndim: Tuple[int, ...]
              ) -> np.ndarray:
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError as e:
            raise FeatureFileError(path, "missing") from e
        except Exception as e:  # any failure to parse is a corrupt file
            raise FeatureFileError(path, f"is not a readable .npy array, "
                                   f"truncated or corrupt "
                                   f"({type(e).__name__}: {e})") from e
        if not isinstance(arr, np.ndarray):
            raise FeatureFileError(path, "is an .npz archive, expected one "
                                   ".npy array")
        if arr.dtype.kind not in 'fiu':
            raise FeatureFileError(path, f"has dtype {arr.dtype}, expected "
                                   f"numbers")
        if arr.ndim not in allowed_ndim:
            shapes = ' or '.join({2: '[T, D]', 3: '[crops, T, D]'}[n]
                                 for n in allowed_ndim)
            raise FeatureFileError(path, f"has shape {list(arr.shape)}, "
                                   f"expected {shapes}")
        if 0 in arr.shape:
            raise FeatureFileError(path, f"is empty (shape "
                                   f"{list(arr.shape)})")
        finite = np.isfinite(arr)
        if not finite.all():
            bad = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise FeatureFileError(path, f"contains {arr[bad]} at index "
                                   f"{list(bad)}: features must be finite "
                                   f"(no NaN or Inf)")
        width = arr.shape[-1]
        ref = self._width.get(view)
        if ref is None:
            self._width[view] = (width, str(path))
        elif ref[0] != width:
            source = ('widths' if ref[1] == 'widths'
                      else f"{ref[1]}, the first file")
            raise FeatureFileError(path, f"has width {width} but view "
                                   f"'{view}' has width {ref[0]} (from "
                                   f"{source})")
        return arr.astype(np.float32, copy=False)

    def _view_crops(self, view: str, name: str) -> Tuple[np.ndarray, Path]:
        r"""Features of one view as :math:`(crops, T, D)` (:obj:`crops = 1`
        for plain :math:`(T, D)` files) and the file to blame for them."""
        files = self._files(view, name)
        if len(files) == 1:
            arr = self._read(files[0], view, (2, 3))
            if arr.ndim == 2:
                return arr[None], files[0]
            return np.moveaxis(arr, self.crop_axis, 0), files[0]
        parts = []
        for f in files:
            arr = self._read(f, view, (2,))
            if parts and arr.shape[0] != parts[0].shape[0]:
                raise FeatureFileError(f, f"has {arr.shape[0]} snippets but "
                                       f"{files[0].name} (crop 0) has "
                                       f"{parts[0].shape[0]}: crops of one "
                                       f"video must agree in length")
            parts.append(arr)
        return np.stack(parts), files[0]

    def _features(self, name: str) -> List[Dict[str, np.ndarray]]:
        per_view = {v: self._view_crops(v, name) for v in self.views}
        lengths = {v: x.shape[1] for v, (x, _) in per_view.items()}
        if len(set(lengths.values())) > 1:
            if self.align == 'error':
                files = ', '.join(f"{f} ({lengths[v]})"
                                  for v, (_, f) in per_view.items())
                raise FeatureFileError(
                    per_view[self.views[-1]][1], f"views of video '{name}' "
                    f"differ in the number of snippets: {files}; pass "
                    f"align='trim' to cut them to the shortest")
            n = min(lengths.values())
            per_view = {v: (x[:, :n], f) for v, (x, f) in per_view.items()}
        if self.crops == 'mean':
            return [{v: x.mean(0) for v, (x, _) in per_view.items()}]
        counts = {v: x.shape[0] for v, (x, _) in per_view.items()
                  if x.shape[0] > 1}
        if isinstance(self.crops, int):
            for v, c in counts.items():
                if self.crops >= c:
                    raise FeatureFileError(per_view[v][1], f"has {c} crops; "
                                           f"crop {self.crops} does not "
                                           f"exist")
            return [{v: x[min(self.crops, x.shape[0] - 1)]
                     for v, (x, _) in per_view.items()}]
        if len(set(counts.values())) > 1:
            v = list(counts)[-1]
            raise FeatureFileError(per_view[v][1], f"has {counts[v]} crops "
                                   f"but other views have {counts}; "
                                   f"crops='all' needs equal crop counts")
        n = max(counts.values(), default=1)
        return [{v: x[min(c, x.shape[0] - 1)] for v, (x, _)
                 in per_view.items()} for c in range(n)]

    # Ground truth --------------------------------------------------------
    def _frame_labels(self, gt, entry: _Entry, num_snippets: int,
                      num_frames: Optional[int], label: Optional[int]
                      ) -> np.ndarray:
        kind, source = gt
        F = num_frames or num_snippets * self.frames_per_snippet
        if kind == 'dir':
            path = source / f'{entry.name}.npy'
            try:
                fl = np.load(path, allow_pickle=False)
            except FileNotFoundError as e:
                raise FeatureFileError(path, f"missing: no frame labels for "
                                       f"video '{entry.name}'") from e
            except Exception as e:
                raise FeatureFileError(path, f"is not a readable .npy array, "
                                       f"truncated or corrupt "
                                       f"({type(e).__name__}: {e})") from e
            if not isinstance(fl, np.ndarray) or fl.ndim != 1 or \
                    fl.size == 0 or not np.isin(fl, (0, 1)).all():
                raise FeatureFileError(path, "frame labels must be a "
                                       "non-empty 1-D array of 0/1")
            return fl.astype(np.uint8)
        ann = source[1].get(entry.name)
        fl = np.zeros(F, dtype=np.uint8)
        if ann is None:
            if label == 1:
                raise FeatureFileError(source[0], f"has no temporal "
                                       f"annotation for anomalous video "
                                       f"'{entry.name}'")
            return fl
        for s, e in ann.intervals:
            if s >= F:
                raise FeatureFileError(source[0], f"{ann.source}: interval "
                                       f"({s}, {e}) of '{entry.name}' "
                                       f"starts after its last frame "
                                       f"({F} frames = {num_snippets} "
                                       f"snippets x "
                                       f"{self.frames_per_snippet})")
            # Features drop the last partial snippet, so intervals may run
            # a little past the last frame that has features.
            fl[s:min(e, F)] = 1
        return fl

    @staticmethod
    def _ground_truth(ground_truth: Optional[PathLike]):
        if ground_truth is None:
            return None
        path = Path(ground_truth)
        if path.is_dir():
            return ('dir', path)
        if not path.is_file():
            raise FeatureFileError(path, "ground truth does not exist")
        if path.suffix == '.npy':
            try:
                fl = np.load(path, allow_pickle=False)
            except Exception as e:
                raise FeatureFileError(path, f"is not a readable .npy array "
                                       f"({type(e).__name__}: {e})") from e
            if fl.ndim != 1 or not np.isin(fl, (0, 1)).all():
                raise FeatureFileError(path, "concatenated frame labels must "
                                       "be a 1-D array of 0/1")
            return ('concat', (path, fl.astype(np.uint8)))
        return ('text', (path, read_annotations(path)))

    # Loading -------------------------------------------------------------
    def load(self, list_file: Optional[PathLike] = None,
             ground_truth: Optional[PathLike] = None,
             labels: Optional[Mapping[str, int]] = None,
             num_frames: Optional[Mapping[str, int]] = None,
             progress: bool = False) -> List[Video]:
        r"""Reads the videos of a list file (or every video of the folder).

        Labels come, in this order, from the list file's second column
        (:obj:`<video or path> 0|1`), :obj:`labels`, the ground truth (an
        annotated interval or a 1 frame means anomalous; UCF-Crime's class
        :obj:`Normal`, or absence from an annotation text file, means
        normal), and the names (:func:`label_from_name`); sources that
        disagree are an error, and so is an anomalous video that an
        annotation text file leaves out. Read train and test sets with one
        :class:`FeatureFolder` so that their widths are checked against
        each other.

        Args:
            list_file (str, optional): One video per line, as a name or a
                feature path (directories, :obj:`.npy`, crop numbers and
                the name suffix are removed; crop lines of one video
                collapse to one). Every video of the first view's folder if
                :obj:`None`.
            ground_truth (str, optional): A temporal annotation text file
                (:func:`read_annotations`), a folder of per-video frame
                labels :obj:`<video>.npy`, or one :obj:`.npy` of all
                videos' frame labels concatenated in list order (RTFM's
                :obj:`gt-ucf.npy`). Test videos then carry
                :obj:`frame_labels`.
            labels (Mapping[str, int], optional): Video name -> 0/1.
            num_frames (Mapping[str, int], optional): Frames per video
                (else :math:`16 \cdot T`, or the frame-label array's
                length).
            progress (bool, optional): Show a progress bar.

        Returns:
            List[Video]: In list order.
        """
        if list_file is None:
            entries = [_Entry(n) for n in self.video_names()]
        else:
            entries = _read_list(list_file, self._strip)
        gt = self._ground_truth(ground_truth)
        iterator = entries
        if progress:
            from tqdm.auto import tqdm
            iterator = tqdm(entries, desc='read features', unit='video')
        videos: List[Video] = []
        offset = 0
        for entry in iterator:
            feats = self._features(entry.name)
            T = next(iter(feats[0].values())).shape[0]
            F = None if num_frames is None else num_frames.get(entry.name)
            label, category = self._label(entry, labels, gt)
            frame_labels = None
            if gt is not None and gt[0] == 'concat':
                path, all_labels = gt[1]
                F = F or T * self.frames_per_snippet
                frame_labels = all_labels[offset:offset + F]
                offset += F
                if frame_labels.shape[0] < F:
                    raise FeatureFileError(path, f"has {all_labels.shape[0]} "
                                           f"frame labels, too few for the "
                                           f"listed videos (ran out at "
                                           f"'{entry.name}')")
            elif gt is not None:
                frame_labels = self._frame_labels(gt, entry, T, F, label)
            if frame_labels is not None:
                has_event = int(bool(frame_labels.any()))
                if label is None:
                    label = has_event
                elif has_event != label and gt[0] != 'text':
                    raise FeatureFileError(
                        gt[1][0] if gt[0] == 'concat'
                        else gt[1] / f'{entry.name}.npy',
                        f"frame labels of '{entry.name}' say "
                        f"{'anomalous' if has_event else 'normal'} but its "
                        f"label is {label}")
            if label is None:
                where = f" ({entry.source})" if entry.source else ''
                raise ValueError(f"cannot tell the label of video "
                                 f"'{entry.name}'{where}: give a 0/1 column "
                                 f"in the list file, labels=..., or ground "
                                 f"truth")
            for c, views in enumerate(feats):
                name = entry.name if len(feats) == 1 else \
                    f'{entry.name}__{c}'
                videos.append(Video(name, views, label, frame_labels,
                                    self.frames_per_snippet, category))
        if gt is not None and gt[0] == 'concat' and \
                offset != gt[1][1].shape[0]:
            raise FeatureFileError(gt[1][0], f"has {gt[1][1].shape[0]} "
                                   f"frame labels but the listed videos have "
                                   f"{offset} frames")
        return videos

    def _label(self, entry: _Entry, labels, gt) -> Tuple[Optional[int],
                                                         Optional[str]]:
        votes: List[Tuple[int, str]] = []
        if entry.label is not None:
            votes.append((entry.label, entry.source))
        if labels is not None and entry.name in labels:
            votes.append((int(labels[entry.name]), 'labels'))
        category = None
        if gt is not None and gt[0] == 'text':
            path, anns = gt[1]
            ann = anns.get(entry.name)
            if ann is not None:
                category = ann.category
                if ann.intervals:
                    votes.append((1, f"{path}, {ann.source}"))
                elif ann.category is not None:
                    votes.append((int(ann.category != 'Normal'),
                                  f"{path}, {ann.source}"))
        from_name = label_from_name(entry.name)
        if from_name is not None:
            votes.append((from_name, 'its name'))
        if len({v for v, _ in votes}) > 1:
            said = '; '.join(f"{s} says {v}" for v, s in votes)
            raise ValueError(f"conflicting labels for video '{entry.name}': "
                             f"{said}")
        return (votes[0][0] if votes else None), category


def load_videos(root: Union[PathLike, Mapping[str, PathLike]],
                list_file: Optional[PathLike] = None,
                views: Optional[Sequence[str]] = None,
                ground_truth: Optional[PathLike] = None,
                crops: Union[str, int] = 'mean', **kwargs) -> List[Video]:
    r"""Reads videos from pre-extracted features in the public layout: a
    shortcut for :obj:`FeatureFolder(root, views, crops, ...).load(list_file,
    ground_truth, ...)`. Keyword arguments go to :class:`FeatureFolder`
    (:obj:`crop_axis`, :obj:`crop_sep`, :obj:`name_suffix`, :obj:`widths`,
    :obj:`frames_per_snippet`, :obj:`align`) or to
    :meth:`FeatureFolder.load` (:obj:`labels`, :obj:`num_frames`,
    :obj:`progress`)."""
    load_keys = ('labels', 'num_frames', 'progress')
    load_kwargs = {k: kwargs.pop(k) for k in load_keys if k in kwargs}
    folder = FeatureFolder(root, views=views, crops=crops, **kwargs)
    return folder.load(list_file, ground_truth, **load_kwargs)
