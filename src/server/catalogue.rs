//! Closed lists defined by one table each: the faults (`--fault`) and the variants
//! (`--variant`).
//!
//! A list that is written out more than once (the enum, an `ALL` array, a match from value to
//! name) can lose a value in one of its copies without a compiler noticing. Here each list is
//! a single table of rows, and everything else is derived from it. An export carries the
//! values it was given as a [`Chosen`] set.

/// Defines an enum with one value per row of the table, in table order, and derives from the
/// same rows:
/// - `ALL`: every value, in table order (the order of `serve --fault list`, `--variant list`
///   and the docs tables);
/// - `spec()`: the row's description, a `$spec` (which has a `name` field);
/// - `name()`, [`Display`](std::fmt::Display) (the name) and `from_name`.
///
/// ```ignore
/// catalogue! {
///     /// Doc comment of the enum.
///     pub enum Colour: ColourSpec {
///         Red => ColourSpec::warm("red"),
///         Blue => ColourSpec::cold("blue"),
///     }
/// }
/// ```
macro_rules! catalogue {
    (
        $(#[$attr:meta])*
        pub enum $enum:ident: $spec:ty {
            $( $value:ident => $row:expr, )+
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $enum {
            $( $value, )+
        }

        impl $enum {
            const COUNT: usize = [$( stringify!($value) ),+].len();

            /// Every value, in table order.
            pub const ALL: [$enum; $enum::COUNT] = [$( $enum::$value ),+];

            /// The rows, indexed by value (values are numbered in table order).
            const SPECS: [$spec; $enum::COUNT] = [$( $row ),+];

            /// Everything the table says about this value.
            pub fn spec(self) -> $spec {
                $enum::SPECS[self as usize]
            }

            /// Kebab-case, as on the command line.
            pub fn name(self) -> &'static str {
                self.spec().name
            }

            /// The value called `name` on the command line.
            pub fn from_name(name: &str) -> Option<$enum> {
                $enum::ALL.into_iter().find(|value| value.name() == name)
            }
        }

        impl std::fmt::Display for $enum {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub(super) use catalogue;

/// The values of one catalogue an export was told to take (`--fault`, `--variant`): sorted,
/// without repeats.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chosen<T>(Vec<T>);

impl<T: Ord> Chosen<T> {
    pub fn new(values: impl IntoIterator<Item = T>) -> Chosen<T> {
        let mut list: Vec<T> = values.into_iter().collect();
        list.sort_unstable();
        list.dedup();
        Chosen(list)
    }

    pub fn has(&self, value: T) -> bool {
        self.0.contains(&value)
    }
}

/// None taken: the plain server.
impl<T> Default for Chosen<T> {
    fn default() -> Self {
        Chosen(Vec::new())
    }
}
