//! Query-aware seeding: from a trigger's query and a row count N, the schema, table, columns and rows that make
//! that query return exactly N — and the rows to add so that it returns N + k.
//!
//! The query is parsed with `sqlparser` (PostgreSQL dialect) and read the way PostgreSQL reads it: unquoted
//! identifiers fold to lower case, quoted ones keep their case, names longer than 63 bytes are cut as
//! PostgreSQL cuts them. Supported: one `SELECT` of `COUNT(*)`, `COUNT(1)`, `COUNT(col)` or `SUM(col)` over one
//! (optionally schema-qualified, optionally aliased) table, with a `WHERE` of comparisons of a column with a
//! literal (`=`, `<>`, `!=`, `<`, `>`, `<=`, `>=`), `[NOT] IN (literals)`, `BETWEEN`, `IS [NOT] NULL`, joined by
//! `AND`. Anything else is refused with an error that quotes the query, names what is not supported and offers
//! `--seed-sql FILE` (`data.seed_sql` in scenario.yaml).
//!
//! This module only plans; `postgres::seed::SeededQuery` creates and fills the table through sqlx and then runs
//! the query itself (as the trigger's role) to check it returns N.
//!
//! How rows are chosen:
//! - Every column the query names gets the type its comparisons need: compared with a number, `integer`
//!   (`bigint`/`numeric` for literals that need them); with a string literal, `text COLLATE "C"` (so `<`/`>`
//!   order bytes, as this planner does); with `true`/`false`, `boolean`; `SUM(col)` is numeric. Columns are
//!   nullable (`IS NULL` needs that) and a matching row gives `COUNT(col)` a non-NULL value. A column
//!   `seed_row` (renamed when the query uses that name) numbers the rows, so a table is never column-less.
//! - Matching rows all carry one value per column that satisfies every condition (found by trying the literals
//!   of the query and values next to them).
//! - `SUM(col)`: N rows of `col = 1`, so that the value KEDA reads is the number of rows, as for `COUNT`, and
//!   adding k rows adds k. When the WHERE excludes 1 (`col > 10`), one row of `col = N` (and one of `k` for each
//!   addition), which the WHERE must then admit. For N = 0, one row of 0: `SUM` over no rows is NULL, not 0,
//!   and KEDA cannot read NULL.
//! - Rows that must not count (one per WHERE condition, each failing exactly that condition, and one with the
//!   counted column NULL for `COUNT(col)`/`SUM(col)`) are added once, so that the data shows the query filters.

use std::cmp::Ordering;
use std::fmt;

mod decimal;
mod parse;

pub use decimal::Decimal;
use parse::Planner;

/// A trigger's query longer than this is not one to plan (the customer's are a line or two); the cap also
/// bounds the depth of `a AND b AND ...` chains, which the parser builds as a tree one level per `AND`.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Rows that must not count are one per WHERE condition, up to this many.
const MAX_DECOYS: usize = 32;

/// PostgreSQL's NAMEDATALEN - 1: longer identifiers are cut to this many bytes (at a character boundary).
const PG_MAX_IDENTIFIER_BYTES: usize = 63;
/// What the planner seeds, said in every "not supported" error.
pub const SUPPORTED: &str = "one SELECT of COUNT(*), COUNT(col) or SUM(col) over one table (optionally \
    schema-qualified), with a WHERE of column-vs-literal comparisons (=, <>, <, >, <=, >=), IN (...), BETWEEN and \
    IS [NOT] NULL joined by AND";

/// The way out for any query the planner cannot seed.
pub const FIX: &str =
    "seed the data yourself: `--seed-sql FILE` (in scenario.yaml: `data.seed_sql: FILE`) runs \
    your SQL instead, and the harness then takes the query's own result as the row count";

/// Why a query cannot be planned. Every message quotes the query (escaped and cut short) and offers [`FIX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedPlanError {
    #[error("the trigger's query {query} is {len} bytes, more than the {MAX_QUERY_BYTES} query-aware seeding reads; {FIX}")]
    TooLong { query: String, len: usize },
    #[error("the trigger's query {query} is not SQL that PostgreSQL would run: {message}; fix the query, or {FIX}")]
    Parse { query: String, message: String },
    #[error("the trigger's query {query} {what}; query-aware seeding supports {SUPPORTED}; {FIX}")]
    Unsupported { query: String, what: String },
    #[error("the trigger's query {query} cannot return {rows}: {why}; {FIX}")]
    Unsatisfiable {
        query: String,
        rows: u64,
        why: String,
    },
}

/// A query as an error shows it: escaped (quotes, newlines visible) and cut short.
fn shown(query: &str) -> String {
    const MAX: usize = 200;
    let cut: String = query.chars().take(MAX).collect();
    let mut out = format!("{cut:?}");
    if query.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// A fragment of the query (an expression) as an error names it.
fn fragment(e: &impl fmt::Display) -> String {
    let s = e.to_string();
    let cut: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        format!("`{cut}…`")
    } else {
        format!("`{cut}`")
    }
}

/// The column types the planner creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Integer,
    BigInt,
    Numeric,
    /// `text COLLATE "C"`: byte order, the order this planner compares strings in.
    Text,
    Boolean,
}

impl SqlType {
    /// The type as written in `CREATE TABLE`.
    pub fn ddl(self) -> &'static str {
        match self {
            SqlType::Integer => "integer",
            SqlType::BigInt => "bigint",
            SqlType::Numeric => "numeric",
            SqlType::Text => "text COLLATE \"C\"",
            SqlType::Boolean => "boolean",
        }
    }

    /// The type a bound parameter is cast to.
    pub fn cast(self) -> &'static str {
        match self {
            SqlType::Text => "text",
            other => other.ddl(),
        }
    }
}

/// One column of the seeded table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    /// The name as PostgreSQL stores it (folded, cut to 63 bytes); quote it with `seed::quote_ident`.
    pub name: String,
    pub sql_type: SqlType,
}

/// The table the query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    /// `public` when the query does not name one.
    pub schema: String,
    pub name: String,
    /// The row-number column (`bigint NOT NULL`), first in the table.
    pub row_number_column: String,
    /// The columns the query names, in the order it names them.
    pub columns: Vec<ColumnPlan>,
}

impl TablePlan {
    /// `schema.name` as a person reads it (unquoted).
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// One value in a seeded row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Number(Decimal),
    Text(String),
    Bool(bool),
}

impl Cell {
    fn kind(&self) -> Option<Kind> {
        match self {
            Cell::Null => None,
            Cell::Number(_) => Some(Kind::Number),
            Cell::Text(_) => Some(Kind::Text),
            Cell::Bool(_) => Some(Kind::Bool),
        }
    }

    /// SQL's comparison: None when either side is NULL (or the kinds differ, which planning refuses).
    fn compare(&self, other: &Cell) -> Option<Ordering> {
        match (self, other) {
            (Cell::Number(a), Cell::Number(b)) => Some(a.compare(*b)),
            // Rust orders strings by their UTF-8 bytes, as COLLATE "C" does.
            (Cell::Text(a), Cell::Text(b)) => Some(a.cmp(b)),
            (Cell::Bool(a), Cell::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Whether the value fits the column type (integers in range, no fractions in integer columns).
    fn fits(&self, ty: SqlType) -> bool {
        match (self, ty) {
            (Cell::Null, _) => true,
            (Cell::Number(d), SqlType::Integer) => {
                d.integer().is_some_and(|n| i32::try_from(n).is_ok())
            }
            (Cell::Number(d), SqlType::BigInt) => {
                d.integer().is_some_and(|n| i64::try_from(n).is_ok())
            }
            (Cell::Number(_), SqlType::Numeric) => true,
            (Cell::Text(_), SqlType::Text) => true,
            (Cell::Bool(_), SqlType::Boolean) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Number(d) => write!(f, "{d}"),
            Cell::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Cell::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Text,
    Bool,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Number => "a number",
            Kind::Text => "a string",
            Kind::Bool => "a boolean",
        }
    }
}

/// `count` identical rows to insert (the row-number column numbers them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowBatch {
    /// One cell per entry of [`TablePlan::columns`].
    pub cells: Vec<Cell>,
    pub count: u64,
}

/// What the query's select list computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// `COUNT(*)`, or `COUNT(literal)`.
    CountRows,
    /// `COUNT(col)`: rows where the column (an index into [`TablePlan::columns`]) is not NULL.
    CountColumn(usize),
    /// `SUM(col)`.
    Sum(usize),
    /// `COUNT(NULL)`: always 0.
    CountNull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    NotEq,
    Lt,
    Gt,
    LtEq,
    GtEq,
}

impl CmpOp {
    fn flipped(self) -> Self {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::GtEq => CmpOp::LtEq,
            same => same,
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::NotEq => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::LtEq => ord != Ordering::Greater,
            CmpOp::GtEq => ord != Ordering::Less,
        }
    }
}

/// One `AND`-ed condition of the WHERE, on one column.
#[derive(Debug, Clone)]
enum Condition {
    Compare(CmpOp, Cell),
    In { list: Vec<Cell>, negated: bool },
    Between(Cell, Cell),
    IsNull,
    IsNotNull,
}

impl Condition {
    /// SQL's three-valued result on `value`: None is unknown (a NULL took part), which a WHERE treats as false.
    fn eval(&self, value: &Cell) -> Option<bool> {
        match self {
            Condition::IsNull => Some(*value == Cell::Null),
            Condition::IsNotNull => Some(*value != Cell::Null),
            Condition::Compare(op, lit) => value.compare(lit).map(|o| op.holds(o)),
            Condition::Between(lo, hi) => {
                let a = value.compare(lo).map(|o| o != Ordering::Less);
                let b = value.compare(hi).map(|o| o != Ordering::Greater);
                match (a, b) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                }
            }
            Condition::In { list, negated } => {
                if *value == Cell::Null {
                    return None;
                }
                let found = list
                    .iter()
                    .any(|l| value.compare(l) == Some(Ordering::Equal));
                let has_null = list.contains(&Cell::Null);
                let r = if found {
                    Some(true)
                } else if has_null {
                    None
                } else {
                    Some(false)
                };
                if *negated {
                    r.map(|b| !b)
                } else {
                    r
                }
            }
        }
    }

    fn literals(&self) -> Vec<&Cell> {
        match self {
            Condition::Compare(_, l) => vec![l],
            Condition::In { list, .. } => list.iter().collect(),
            Condition::Between(a, b) => vec![a, b],
            Condition::IsNull | Condition::IsNotNull => vec![],
        }
    }
}

#[derive(Debug, Clone)]
struct ColumnCondition {
    column: usize,
    condition: Condition,
    /// The condition as the query wrote it, for messages.
    text: String,
}

/// How matching rows make up the value of the query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Filling {
    /// The WHERE admits no row at all: only N = 0 can be seeded (the reason is kept for the error).
    Impossible(String),
    /// `count` copies of the matching row count `count` (COUNT, or SUM of rows of 1).
    Copies(Vec<Cell>),
    /// SUM whose column cannot be 1: one row per addition, whose summed column carries the amount.
    OneRowOf { row: Vec<Cell>, column: usize },
}

/// The plan for one query: the table to create, the rows that must not count, and how to make the query's
/// value N (and then N + k).
#[derive(Debug, Clone)]
pub struct SeedPlan {
    query: String,
    rows: u64,
    table: TablePlan,
    aggregate: Aggregate,
    conditions: Vec<ColumnCondition>,
    filling: Filling,
    decoys: Vec<Vec<Cell>>,
}

impl SeedPlan {
    /// Plan the data for `query` to return exactly `rows`.
    pub fn for_query(query: &str, rows: u64) -> Result<Self, SeedPlanError> {
        let plan = Planner::new(query).plan()?;
        // Fail now, not when KEDA is already polling, if N itself cannot be seeded.
        plan.batches_for_total(rows)?;
        Ok(Self { rows, ..plan })
    }

    /// The query as given.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The N the plan was made for (the initial value of the query).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn table(&self) -> &TablePlan {
        &self.table
    }

    pub fn aggregate(&self) -> Aggregate {
        self.aggregate
    }

    /// Schemas to create: the table's, unless it is `public`.
    pub fn schemas(&self) -> Vec<&str> {
        if self.table.schema == "public" {
            Vec::new()
        } else {
            vec![self.table.schema.as_str()]
        }
    }

    /// Rows that must not count: each fails one WHERE condition, or has the counted column NULL.
    pub fn decoy_rows(&self) -> Vec<RowBatch> {
        self.decoys
            .iter()
            .map(|cells| RowBatch {
                cells: cells.clone(),
                count: 1,
            })
            .collect()
    }

    /// The rows (besides the decoys) of a table for which the query returns `total`.
    pub fn batches_for_total(&self, total: u64) -> Result<Vec<RowBatch>, SeedPlanError> {
        if total == 0 {
            return match (&self.aggregate, &self.filling) {
                (Aggregate::Sum(col), Filling::Copies(row) | Filling::OneRowOf { row, .. }) => {
                    // SUM over no rows is NULL; one matching row of 0 makes it 0.
                    let mut row = row.clone();
                    row[*col] = Cell::Number(Decimal::from_int(0));
                    if !self.admits(&row) {
                        return Err(self.unsatisfiable(
                            0,
                            format!(
                                "SUM over no matching rows is NULL, not 0 (KEDA cannot read NULL), and the WHERE \
                                 does not admit a row with `{}` = 0",
                                self.table.columns[*col].name
                            ),
                        ));
                    }
                    Ok(vec![RowBatch {
                        cells: row,
                        count: 1,
                    }])
                }
                (Aggregate::Sum(_), Filling::Impossible(why)) => Err(self.unsatisfiable(
                    0,
                    format!("SUM over no matching rows is NULL, not 0 (KEDA cannot read NULL), and {why}"),
                )),
                _ => Ok(Vec::new()),
            };
        }
        self.batches_to_add(total).map_err(|e| match e {
            SeedPlanError::Unsatisfiable { query, why, .. } => SeedPlanError::Unsatisfiable {
                query,
                rows: total,
                why,
            },
            other => other,
        })
    }

    /// The rows to insert so that the query's value grows by `k` (0 for k = 0).
    pub fn batches_to_add(&self, k: u64) -> Result<Vec<RowBatch>, SeedPlanError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let k_dec = i128::from(k);
        match &self.filling {
            Filling::Impossible(why) => Err(self.unsatisfiable(k, why.clone())),
            Filling::Copies(row) => Ok(vec![RowBatch {
                cells: row.clone(),
                count: k,
            }]),
            Filling::OneRowOf { row, column } => {
                let mut row = row.clone();
                row[*column] = Cell::Number(Decimal::from_int(k_dec));
                let ty = self.table.columns[*column].sql_type;
                if !row[*column].fits(ty) || !self.admits(&row) {
                    return Err(self.unsatisfiable(
                        k,
                        format!(
                            "the WHERE does not admit `{0}` = 1, so SUM({0}) is made of one row per step, which \
                             must then be `{0}` = {k}, and the WHERE does not admit that either",
                            self.table.columns[*column].name
                        ),
                    ));
                }
                Ok(vec![RowBatch {
                    cells: row,
                    count: 1,
                }])
            }
        }
    }

    /// What the query computes on `rows` (each batch `count` times), by this planner's reading of it: the
    /// value PostgreSQL must return too (None: NULL).
    pub fn evaluate(&self, rows: &[RowBatch]) -> Option<Decimal> {
        let mut count: u64 = 0;
        let mut sum: Option<Decimal> = None;
        for b in rows.iter().filter(|b| self.admits(&b.cells)) {
            match self.aggregate {
                Aggregate::CountRows => count += b.count,
                Aggregate::CountNull => {}
                Aggregate::CountColumn(c) => {
                    if b.cells[c] != Cell::Null {
                        count += b.count
                    }
                }
                Aggregate::Sum(c) => {
                    if let Cell::Number(v) = &b.cells[c] {
                        let times = Decimal::from_int(i128::from(b.count));
                        let add = v.checked_mul_int(times.integer()?)?;
                        sum = Some(match sum {
                            None => add,
                            Some(s) => s.checked_add(add)?,
                        });
                    }
                }
            }
        }
        match self.aggregate {
            Aggregate::Sum(_) => sum,
            _ => Some(Decimal::from_int(i128::from(count))),
        }
    }

    fn admits(&self, row: &[Cell]) -> bool {
        self.conditions
            .iter()
            .all(|c| c.condition.eval(&row[c.column]) == Some(true))
    }

    fn unsatisfiable(&self, rows: u64, why: String) -> SeedPlanError {
        SeedPlanError::Unsatisfiable {
            query: shown(&self.query),
            rows,
            why,
        }
    }
}

impl SeedPlan {
    /// Candidate values of one column: the literals the query compares it with and values just beside them,
    /// then plain defaults. Every candidate fits the column's type.
    fn candidates(&self, column: usize) -> Vec<Cell> {
        let ty = self.table.columns[column].sql_type;
        let lits: Vec<&Cell> = self
            .conditions
            .iter()
            .filter(|c| c.column == column)
            .flat_map(|c| c.condition.literals())
            .collect();
        let mut out: Vec<Cell> = Vec::new();
        match ty {
            SqlType::Text => {
                out.push(Cell::Text("seed".into()));
                for l in &lits {
                    if let Cell::Text(s) = l {
                        out.push(Cell::Text(s.clone()));
                        for suffix in ["a", " ", "\u{1}"] {
                            out.push(Cell::Text(format!("{s}{suffix}")));
                        }
                        let mut shorter = s.clone();
                        shorter.pop();
                        out.push(Cell::Text(shorter));
                    }
                }
                out.push(Cell::Text(String::new()));
            }
            SqlType::Boolean => {
                out.push(Cell::Bool(true));
                out.push(Cell::Bool(false));
            }
            SqlType::Integer | SqlType::BigInt | SqlType::Numeric => {
                let nums: Vec<Decimal> = lits
                    .iter()
                    .filter_map(|l| match l {
                        Cell::Number(d) => Some(*d),
                        _ => None,
                    })
                    .collect();
                out.push(Cell::Number(Decimal::from_int(1)));
                let one = Decimal::from_int(1);
                for d in &nums {
                    out.push(Cell::Number(*d));
                    for step in [one, one.neg()] {
                        if let Some(x) = d.checked_add(step) {
                            out.push(Cell::Number(x));
                        }
                    }
                    if ty == SqlType::Numeric {
                        if let Some(x) = Decimal::new(5, 1).and_then(|h| d.checked_add(h)) {
                            out.push(Cell::Number(x));
                        }
                    }
                }
                if ty == SqlType::Numeric {
                    for (i, a) in nums.iter().enumerate() {
                        for b in nums.iter().skip(i + 1).take(64) {
                            if let Some(m) = a.midpoint(*b) {
                                out.push(Cell::Number(m));
                            }
                        }
                    }
                }
                out.push(Cell::Number(Decimal::from_int(0)));
            }
        }
        out.retain(|c| c.fits(ty));
        out
    }

    /// The conditions on `column`.
    fn conditions_on(&self, column: usize) -> impl Iterator<Item = &ColumnCondition> {
        self.conditions.iter().filter(move |c| c.column == column)
    }

    /// A value for `column` that every condition on it admits (NULL only when one asks for IS NULL and
    /// `non_null` is false).
    fn value_for(&self, column: usize, non_null: bool) -> Result<Cell, String> {
        let conds: Vec<&ColumnCondition> = self.conditions_on(column).collect();
        let admits = |v: &Cell| conds.iter().all(|c| c.condition.eval(v) == Some(true));
        let name = &self.table.columns[column].name;
        if conds
            .iter()
            .any(|c| matches!(c.condition, Condition::IsNull))
        {
            if non_null {
                return Err(format!(
                    "the WHERE asks for `{name}` IS NULL, and {} counts only rows where it is not NULL",
                    match self.aggregate {
                        Aggregate::Sum(_) => "SUM",
                        _ => "COUNT",
                    }
                ));
            }
            if admits(&Cell::Null) {
                return Ok(Cell::Null);
            }
            let others: Vec<&str> = conds
                .iter()
                .filter(|c| !matches!(c.condition, Condition::IsNull))
                .map(|c| c.text.as_str())
                .collect();
            return Err(format!(
                "the WHERE asks for `{name}` IS NULL and also `{}`, which no NULL satisfies",
                others.join(" AND ")
            ));
        }
        if let Some(c) = self.candidates(column).into_iter().find(|v| admits(v)) {
            return Ok(c);
        }
        let texts: Vec<&str> = conds.iter().map(|c| c.text.as_str()).collect();
        Err(format!(
            "the harness found no value of `{name}` that satisfies `{}` (a comparison with NULL is never true)",
            texts.join(" AND ")
        ))
    }

    fn filling(&self) -> Filling {
        let counted = match self.aggregate {
            Aggregate::CountColumn(c) | Aggregate::Sum(c) => Some(c),
            _ => None,
        };
        let mut row = Vec::with_capacity(self.table.columns.len());
        for i in 0..self.table.columns.len() {
            match self.value_for(i, Some(i) == counted) {
                Ok(v) => row.push(v),
                Err(why) => return Filling::Impossible(why),
            }
        }
        match self.aggregate {
            Aggregate::CountNull => {
                Filling::Impossible("COUNT(NULL) counts no row: it is always 0".into())
            }
            Aggregate::Sum(c) => {
                let mut unit = row.clone();
                unit[c] = Cell::Number(Decimal::from_int(1));
                if self.admits(&unit) {
                    Filling::Copies(unit)
                } else {
                    Filling::OneRowOf { row, column: c }
                }
            }
            _ => Filling::Copies(row),
        }
    }

    /// Rows that must not count: for each condition, the matching row with that condition's column set to a
    /// value the condition refuses; for COUNT(col)/SUM(col), the matching row with that column NULL.
    fn decoys(&self) -> Vec<Vec<Cell>> {
        let base = match &self.filling {
            Filling::Copies(row) | Filling::OneRowOf { row, .. } => row.clone(),
            Filling::Impossible(_) => return Vec::new(),
        };
        let mut out: Vec<Vec<Cell>> = Vec::new();
        for cond in self.conditions.iter().take(MAX_DECOYS) {
            let refuses = |v: &Cell| cond.condition.eval(v) != Some(true);
            let mut candidates = self.candidates(cond.column);
            candidates.push(Cell::Null);
            if let Some(v) = candidates.into_iter().find(|v| refuses(v)) {
                let mut row = base.clone();
                row[cond.column] = v;
                out.push(row);
            }
        }
        if let Aggregate::CountColumn(c) | Aggregate::Sum(c) = self.aggregate {
            let mut row = base.clone();
            row[c] = Cell::Null;
            out.push(row);
        }
        out.dedup();
        // By construction none is admitted with a counted value; keep the guarantee explicit.
        out.retain(|r| {
            let counted = match self.aggregate {
                Aggregate::CountColumn(c) | Aggregate::Sum(c) => r[c] != Cell::Null,
                _ => true,
            };
            !(self.admits(r) && counted)
        });
        out
    }
}

#[cfg(test)]
mod tests;
