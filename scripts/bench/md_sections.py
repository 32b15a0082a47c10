"""Pieces of BENCHMARKS.md that several of its generated sections share:
finding a section between its HTML-comment marks in the existing file (so a
run that did not measure it can keep the last one), and the run's header
lines (date, commit, machine, allocators)."""

import os


def extract(text, begin, end):
    """The part of TEXT from mark BEGIN through mark END, or None."""
    i = text.find(begin)
    j = text.find(end)
    if i < 0 or j < i:
        return None
    return text[i:j + len(end)]


def kept(path_md, extract_fn):
    """EXTRACT_FN's section of the BENCHMARKS.md at PATH_MD, if the file and the section exist."""
    if not os.path.isfile(path_md):
        return None
    with open(path_md, errors="replace") as f:
        return extract_fn(f.read())


def header_lines(date, commit, machine, alloc_notes, machine_note=""):
    mi = machine
    return [
        "- Date: %s" % date,
        "- Commit: %s" % commit,
        "- Machine: %s, %d cores%s, Linux %s, %s%s" % (
            mi["cpu"], mi["cores"], (", %.0f GiB RAM" % mi["mem_gib"]) if mi["mem_gib"] else "",
            mi["kernel"], mi["libc"], machine_note),
        "- Allocators: " + "; ".join(alloc_notes),
    ]


def replace_in_file(path_md, splice_fn, section):
    """Writes SPLICE_FN(the BENCHMARKS.md at PATH_MD, or a bare title, SECTION)
    back to PATH_MD: one section of the file replaced, the rest kept."""
    os.makedirs(os.path.dirname(path_md) or ".", exist_ok=True)
    text = "# memx benchmarks\n\n"
    if os.path.isfile(path_md):
        with open(path_md, errors="replace") as f:
            text = f.read()
    with open(path_md, "w") as f:
        f.write(splice_fn(text, section))
