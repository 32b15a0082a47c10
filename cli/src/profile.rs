//! A dump with its stacks symbolised, and aggregation per site.

use std::collections::HashMap;
use std::path::Path;

use crate::dump::{Dump, Estimate};
use crate::symbolize::{Frame, Symbolizer, Unnamed};

/// What a row of a table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Function,
    Line,
    Stack,
}

impl By {
    pub fn parse(s: &str) -> Option<By> {
        match s {
            "function" | "func" | "functions" => Some(By::Function),
            "line" | "lines" => Some(By::Line),
            "stack" | "stacks" => Some(By::Stack),
            _ => None,
        }
    }
}

pub struct SymSample {
    pub est: Estimate,
    /// Indices into `SymProfile::frames`, innermost first, memx's own
    /// frames removed.
    pub stack: Vec<usize>,
}

pub struct SymProfile {
    pub dump: Dump,
    pub frames: Vec<Frame>,
    pub samples: Vec<SymSample>,
    /// Stripped modules whose frames show as `module+0xoffset`.
    pub unnamed: Vec<Unnamed>,
}

pub const UNKNOWN: &str = "<unknown>";
/// The `module` of Python frames.
pub const PYTHON_MODULE: &str = "[python]";

/// The one frame that stands for a run of import machinery frames.
pub const IMPORT_FRAME: &str = "[import] <frozen importlib>";
/// The one frame that stands for the interpreter's C frames of a stack
/// without Python frames.
pub const INTERPRETER_FRAME: &str = "[python interpreter]";

/// Whether a native frame's module is the interpreter itself: libpython or
/// a `python3.X` executable (which links it in statically).
pub fn is_interpreter(module: &str) -> bool {
    let name = crate::symbolize::basename(module);
    name.starts_with("libpython")
        || (name.starts_with("python") && !name.contains(".so") && !name.ends_with(".py"))
}

/// Allocation entry points that are never the interesting site: C++'s
/// `operator new` family and the C allocation functions themselves (a
/// gperftools dump or a program that calls them through a wrapper).
pub fn is_alloc_function(name: &str) -> bool {
    const C_NAMES: &[&str] = &[
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "free",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "__libc_malloc",
        "__libc_calloc",
        "__libc_realloc",
        "__libc_memalign",
    ];
    name.starts_with("operator new")
        || name.starts_with("operator delete")
        || C_NAMES.contains(&name)
}

/// The same as a regular expression, for pprof's `drop_frames`.
pub const ALLOC_FUNCTIONS_RE: &str = "^(operator new.*|operator delete.*|malloc|calloc|realloc|reallocarray|free|posix_memalign|aligned_alloc|memalign|valloc|pvalloc|__libc_malloc|__libc_calloc|__libc_realloc|__libc_memalign)$";

impl SymProfile {
    pub fn load(path: &Path) -> Result<SymProfile, String> {
        let dump = Dump::load_for_message(path)?;
        Ok(SymProfile::new(dump))
    }

    pub fn new(dump: Dump) -> SymProfile {
        let mut frames = Vec::new();
        let mut ids: HashMap<Frame, usize> = HashMap::new();
        let mut samples = Vec::with_capacity(dump.samples.len());
        let unnamed;
        {
            let mut sym = Symbolizer::new(&dump);
            for s in &dump.samples {
                let mut stack = Vec::new();
                for &addr in &s.stack {
                    let r = sym.resolve(addr);
                    for f in &r.frames {
                        if f.hidden {
                            continue;
                        }
                        let id = *ids.entry(f.clone()).or_insert_with(|| {
                            frames.push(f.clone());
                            frames.len() - 1
                        });
                        stack.push(id);
                    }
                }
                // Like pprof, start the stack at the caller of the
                // allocation functions (operator new, malloc wrappers).
                let skip = stack
                    .iter()
                    .take_while(|&&f| is_alloc_function(&frames[f].function))
                    .count();
                if skip < stack.len() {
                    stack.drain(..skip);
                }
                samples.push(SymSample { est: s.est, stack });
            }
            unnamed = sym.unnamed();
        }
        SymProfile {
            dump,
            frames,
            samples,
            unnamed,
        }
    }

    /// One profile of several (`memx report --merge`): their samples side
    /// by side, frames matched by what they are (each dump is symbolised
    /// with its own maps first). The merged dump is named after the first.
    pub fn merge(parts: Vec<SymProfile>) -> Option<SymProfile> {
        let mut parts = parts.into_iter();
        let mut all = parts.next()?;
        let mut ids: HashMap<Frame, usize> = all
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), i))
            .collect();
        let mut more = 0;
        for p in parts {
            more += 1;
            let map: Vec<usize> = p
                .frames
                .iter()
                .map(|f| {
                    *ids.entry(f.clone()).or_insert_with(|| {
                        all.frames.push(f.clone());
                        all.frames.len() - 1
                    })
                })
                .collect();
            for s in p.samples {
                all.samples.push(SymSample {
                    est: s.est,
                    stack: s.stack.iter().map(|&f| map[f]).collect(),
                });
            }
            all.dump.samples.extend(p.dump.samples);
            all.dump.python_frames.extend(p.dump.python_frames);
        }
        if more > 0 {
            let mut name = all.dump.path.clone().into_os_string();
            name.push(format!(
                " + {more} more dump{}",
                if more == 1 { "" } else { "s" }
            ));
            all.dump.path = name.into();
            all.dump.header = all.dump.raw_total();
            all.dump.pid = None;
            all.dump.seq = None;
            all.dump.process = None;
        }
        Some(all)
    }

    /// Whether any stack holds a Python frame.
    pub fn has_python(&self) -> bool {
        !self.dump.python_frames.is_empty()
    }

    /// Starts each stack that holds Python frames at its innermost Python
    /// frame, so memory is charged to Python lines rather than to the
    /// interpreter's C functions.
    pub fn python_view(&mut self) {
        let frames = &self.frames;
        for s in &mut self.samples {
            if let Some(i) = s
                .stack
                .iter()
                .position(|&f| frames[f].module == PYTHON_MODULE)
            {
                s.stack.drain(..i);
            }
        }
    }

    /// The view a Python user reads (the default when a dump has Python
    /// frames): each stack that holds Python frames keeps only those, the
    /// interpreter's C frames between and above them folded away, each run
    /// of import machinery (`<frozen importlib…>`) as one frame; below the
    /// innermost Python frame, with `leaves`, the native frames that are not
    /// the interpreter's (numpy's, a C extension's) stay as the allocation
    /// site. A stack without Python frames (the interpreter starting, a
    /// library's own thread) keeps its native frames up to the first of the
    /// interpreter's, which stand for the rest as one frame.
    pub fn python_first(&mut self, leaves: bool) {
        let import = self.frames.len();
        let interpreter = import + 1;
        for name in [IMPORT_FRAME, INTERPRETER_FRAME] {
            self.frames.push(Frame {
                function: name.to_string(),
                file: None,
                line: None,
                module: PYTHON_MODULE.to_string(),
                hidden: false,
            });
        }
        let frames = &self.frames;
        let is_py = |f: usize| frames[f].module == PYTHON_MODULE;
        let is_import = |f: usize| {
            frames[f]
                .file
                .as_deref()
                .is_some_and(|file| file.starts_with("<frozen importlib"))
        };
        for s in &mut self.samples {
            let Some(first) = s.stack.iter().position(|&f| is_py(f)) else {
                let native = |&f: &usize| !is_interpreter(&frames[f].module);
                if let Some(n) = s.stack.iter().position(|f| !native(f)) {
                    s.stack.truncate(n);
                    s.stack.push(interpreter);
                }
                continue;
            };
            let mut stack: Vec<usize> = if leaves {
                s.stack[..first]
                    .iter()
                    .copied()
                    .filter(|&f| !is_interpreter(&frames[f].module))
                    .collect()
            } else {
                Vec::new()
            };
            for &f in s.stack[first..].iter().filter(|&&f| is_py(f)) {
                let f = if is_import(f) { import } else { f };
                if f != import || stack.last() != Some(&import) {
                    stack.push(f);
                }
            }
            s.stack = stack;
        }
    }

    /// Keeps only the Python frames (`python`) or only the native ones
    /// (`!python`) of every stack. A stack left empty is charged to one
    /// placeholder frame, so totals and percentages still add up.
    pub fn only(&mut self, python: bool) {
        let placeholder = self.frames.len();
        self.frames.push(Frame {
            function: if python {
                "[no Python frames]"
            } else {
                "[Python code only]"
            }
            .to_string(),
            file: None,
            line: None,
            module: String::new(),
            hidden: false,
        });
        let frames = &self.frames;
        for s in &mut self.samples {
            s.stack
                .retain(|&f| (frames[f].module == PYTHON_MODULE) == python);
            if s.stack.is_empty() {
                s.stack.push(placeholder);
            }
        }
    }

    pub fn total(&self) -> Estimate {
        self.dump.total()
    }

    /// The key of one frame in a table by `by` (not `Stack`).
    pub fn key(&self, frame: usize, by: By) -> String {
        let f = &self.frames[frame];
        match by {
            By::Function => f.function.clone(),
            _ => f.with_line(),
        }
    }

    /// Frame names outermost first (for flame graphs).
    pub fn stack_names(&self, s: &SymSample, by: By) -> Vec<String> {
        s.stack.iter().rev().map(|&f| self.key(f, by)).collect()
    }

    pub fn aggregate(&self, by: By) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut row = |key: String, rows: &mut Vec<Row>| -> usize {
            *index.entry(key.clone()).or_insert_with(|| {
                rows.push(Row {
                    key,
                    flat: Estimate::default(),
                    cum: Estimate::default(),
                });
                rows.len() - 1
            })
        };
        for s in &self.samples {
            if by == By::Stack {
                let key = if s.stack.is_empty() {
                    UNKNOWN.to_string()
                } else {
                    s.stack
                        .iter()
                        .map(|&f| self.key(f, By::Line))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                let i = row(key, &mut rows);
                rows[i].flat.add(&s.est);
                rows[i].cum.add(&s.est);
                continue;
            }
            let keys: Vec<String> = if s.stack.is_empty() {
                vec![UNKNOWN.to_string()]
            } else {
                s.stack.iter().map(|&f| self.key(f, by)).collect()
            };
            let first = row(keys[0].clone(), &mut rows);
            rows[first].flat.add(&s.est);
            let mut seen: Vec<usize> = Vec::with_capacity(keys.len());
            for k in keys {
                let i = row(k, &mut rows);
                if !seen.contains(&i) {
                    seen.push(i);
                    rows[i].cum.add(&s.est);
                }
            }
        }
        rows
    }
}

#[derive(Clone, Debug)]
pub struct Row {
    pub key: String,
    pub flat: Estimate,
    pub cum: Estimate,
}
