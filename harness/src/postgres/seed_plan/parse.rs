//! Reading the query: sqlparser's tree, checked clause by clause, into the table, the aggregate and the AND-ed
//! conditions the planner seeds for.

use sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Ident, InTarget, ObjectName, ObjectNamePart, Query, Select, SelectFlavor, SelectItem, SetExpr,
    Statement, TableFactor, UnaryOperator, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::decimal::{Decimal, MAX_SCALE};
use super::*;

/// A column the query names, as PostgreSQL reads it.
fn folded(ident: &Ident) -> Result<String, String> {
    let name = match ident.quote_style {
        None => ident.value.to_ascii_lowercase(),
        Some('"') => ident.value.clone(),
        Some(q) => {
            return Err(format!(
                "quotes an identifier with {q:?}, which PostgreSQL does not"
            ))
        }
    };
    if name.is_empty() {
        return Err("has an empty quoted identifier (\"\"), which PostgreSQL refuses".into());
    }
    if name.contains('\0') {
        return Err("has a NUL character in an identifier".into());
    }
    let mut cut = name.len().min(PG_MAX_IDENTIFIER_BYTES);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    Ok(name[..cut].to_string())
}

pub(super) struct Planner<'q> {
    query: &'q str,
    schema: String,
    table: String,
    alias: Option<String>,
    columns: Vec<(String, Option<Kind>)>,
}

impl<'q> Planner<'q> {
    pub(super) fn new(query: &'q str) -> Self {
        Self {
            query,
            schema: String::new(),
            table: String::new(),
            alias: None,
            columns: Vec::new(),
        }
    }

    fn unsupported(&self, what: impl Into<String>) -> SeedPlanError {
        SeedPlanError::Unsupported {
            query: shown(self.query),
            what: what.into(),
        }
    }

    fn parse_error(&self, message: impl Into<String>) -> SeedPlanError {
        SeedPlanError::Parse {
            query: shown(self.query),
            message: message.into(),
        }
    }

    pub(super) fn plan(mut self) -> Result<SeedPlan, SeedPlanError> {
        if self.query.len() > MAX_QUERY_BYTES {
            return Err(SeedPlanError::TooLong {
                query: shown(self.query),
                len: self.query.len(),
            });
        }
        if self.query.contains('\0') {
            return Err(self.parse_error("it contains a NUL character"));
        }
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, self.query)
            .map_err(|e| self.parse_error(e.to_string()))?;
        let query = match statements.as_slice() {
            [] => return Err(self.parse_error("it is empty")),
            [Statement::Query(q)] => q,
            [other] => {
                let verb = other.to_string();
                let verb = verb.split_whitespace().next().unwrap_or_default();
                return Err(self.unsupported(format!(
                    "is a `{verb}` statement, not a SELECT (KEDA reads the first column of the first row a SELECT returns)"
                )));
            }
            many => {
                return Err(self.unsupported(format!(
                    "holds {} statements; KEDA runs one query (pgx refuses several in one), so give one SELECT",
                    many.len()
                )))
            }
        };
        let select = self.select_of(query)?;
        self.table_of(select)?;
        let aggregate = self.aggregate_of(select)?;
        let conditions = match &select.selection {
            None => Vec::new(),
            Some(e) => self.conditions_of(e)?,
        };
        self.finish(aggregate, conditions)
    }

    fn select_of<'a>(&self, q: &'a Query) -> Result<&'a Select, SeedPlanError> {
        let clause = |present: bool, what: &str| {
            if present {
                Err(self.unsupported(format!("uses {what}")))
            } else {
                Ok(())
            }
        };
        clause(q.with.is_some(), "a WITH clause")?;
        clause(q.order_by.is_some(), "ORDER BY")?;
        clause(q.limit_clause.is_some(), "LIMIT/OFFSET")?;
        clause(q.fetch.is_some(), "FETCH")?;
        clause(!q.locks.is_empty(), "a locking clause (FOR UPDATE ...)")?;
        clause(q.for_clause.is_some(), "a FOR clause")?;
        clause(q.settings.is_some(), "SETTINGS")?;
        clause(q.format_clause.is_some(), "FORMAT")?;
        clause(!q.pipe_operators.is_empty(), "pipe operators")?;
        let s = match q.body.as_ref() {
            SetExpr::Select(s) => s,
            SetExpr::SetOperation { op, .. } => {
                return Err(self.unsupported(format!("combines queries with {op}")))
            }
            SetExpr::Query(_) => {
                return Err(self.unsupported(
                    "is a parenthesised query; write the SELECT without the parentheses",
                ))
            }
            other => {
                return Err(self.unsupported(format!("is {} rather than a SELECT", fragment(other))))
            }
        };
        clause(s.flavor != SelectFlavor::Standard, "FROM-first syntax")?;
        clause(s.distinct.is_some(), "DISTINCT")?;
        clause(s.top.is_some(), "TOP")?;
        clause(s.into.is_some(), "SELECT INTO (which creates a table)")?;
        clause(s.exclude.is_some(), "EXCLUDE")?;
        clause(s.select_modifiers.is_some(), "SELECT modifiers")?;
        clause(!s.optimizer_hints.is_empty(), "optimizer hints")?;
        clause(!s.lateral_views.is_empty(), "LATERAL VIEW")?;
        clause(s.prewhere.is_some(), "PREWHERE")?;
        clause(!s.connect_by.is_empty(), "CONNECT BY")?;
        let grouped = match &s.group_by {
            GroupByExpr::All(_) => true,
            GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
        };
        clause(grouped, "GROUP BY")?;
        clause(
            !s.cluster_by.is_empty() || !s.distribute_by.is_empty() || !s.sort_by.is_empty(),
            "CLUSTER/DISTRIBUTE/SORT BY",
        )?;
        clause(s.having.is_some(), "HAVING")?;
        clause(!s.named_window.is_empty(), "WINDOW")?;
        clause(s.qualify.is_some(), "QUALIFY")?;
        clause(s.value_table_mode.is_some(), "SELECT AS VALUE/STRUCT")?;
        Ok(s)
    }

    fn table_of(&mut self, s: &Select) -> Result<(), SeedPlanError> {
        let from = match s.from.as_slice() {
            [] => return Err(self.unsupported("reads no table (no FROM)")),
            [one] => one,
            [_, ..] => return Err(self.unsupported("reads several tables (`FROM a, b` is a join)")),
        };
        if let Some(j) = from.joins.first() {
            return Err(self.unsupported(format!("uses a JOIN ({})", fragment(j))));
        }
        let TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_directives,
            inheritance: _,
        } = &from.relation
        else {
            let what = match &from.relation {
                TableFactor::Derived { .. } => "reads from a subquery".to_string(),
                other => format!("reads from {}", fragment(other)),
            };
            return Err(self.unsupported(what));
        };
        if args.is_some() {
            return Err(self.unsupported("reads from a table function"));
        }
        if !with_hints.is_empty()
            || version.is_some()
            || *with_ordinality
            || !partitions.is_empty()
            || json_path.is_some()
            || sample.is_some()
            || !index_directives.is_empty()
        {
            return Err(self.unsupported(format!(
                "reads {} with options beyond a name and an alias",
                fragment(&from.relation)
            )));
        }
        let parts = self.name_parts(name)?;
        match parts.as_slice() {
            [t] => {
                self.schema = "public".into();
                self.table = t.clone();
            }
            [s, t] => {
                self.schema = s.clone();
                self.table = t.clone();
            }
            _ => {
                return Err(self.unsupported(format!(
                    "names the table {} with {} parts; write `table` or `schema.table` (the database is the \
                     trigger's dbName)",
                    fragment(name),
                    parts.len()
                )))
            }
        }
        if let Some(a) = alias {
            if !a.columns.is_empty() {
                return Err(self.unsupported("renames the table's columns in its alias"));
            }
            self.alias = Some(folded(&a.name).map_err(|m| self.parse_error(m))?);
        }
        Ok(())
    }

    fn name_parts(&self, name: &ObjectName) -> Result<Vec<String>, SeedPlanError> {
        name.0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => folded(i).map_err(|m| self.parse_error(m)),
                other => Err(self.unsupported(format!("names a table with {}", fragment(other)))),
            })
            .collect()
    }

    /// The index of the column `e` names (added on first use), or an error when `e` is not a column of the table.
    fn column_of(&mut self, e: &Expr) -> Result<Option<usize>, SeedPlanError> {
        let parts: Vec<&Ident> = match e {
            Expr::Identifier(i) => vec![i],
            Expr::CompoundIdentifier(parts) => parts.iter().collect(),
            Expr::Nested(inner) => return self.column_of(inner),
            _ => return Ok(None),
        };
        let names = parts
            .iter()
            .map(|i| folded(i).map_err(|m| self.parse_error(m)))
            .collect::<Result<Vec<_>, _>>()?;
        let (qualifier, column) = names.split_at(names.len() - 1);
        let ok = match (qualifier, &self.alias) {
            ([], _) => true,
            // With an alias, PostgreSQL only knows the table by it ("invalid reference to FROM-clause entry").
            ([q], Some(a)) => q == a,
            ([t], None) => *t == self.table,
            ([s, t], None) => *s == self.schema && *t == self.table,
            _ => false,
        };
        if !ok {
            return Err(self.unsupported(format!(
                "names the column {}, which is not one of the query's table ({}{})",
                fragment(e),
                self.table,
                self.alias
                    .as_ref()
                    .map(|a| format!(", known as `{a}` in this query"))
                    .unwrap_or_default()
            )));
        }
        let name = column[0].clone();
        let at = match self.columns.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                self.columns.push((name, None));
                self.columns.len() - 1
            }
        };
        Ok(Some(at))
    }

    fn aggregate_of(&mut self, s: &Select) -> Result<Aggregate, SeedPlanError> {
        let expr = match s.projection.as_slice() {
            [SelectItem::UnnamedExpr(e)] | [SelectItem::ExprWithAlias { expr: e, .. }] => e,
            [one] => {
                return Err(self.unsupported(format!(
                    "selects {}; KEDA reads one number, so select one COUNT or SUM",
                    fragment(one)
                )))
            }
            many => {
                return Err(self.unsupported(format!(
                    "selects {} columns; KEDA reads the first one only, so select one COUNT or SUM",
                    many.len()
                )))
            }
        };
        let Expr::Function(f) = expr else {
            return Err(self.unsupported(format!(
                "selects {}, not COUNT(...) or SUM(...)",
                fragment(expr)
            )));
        };
        let name = self.function_name(f)?;
        let arg = self.single_argument(f, &name)?;
        match (name.as_str(), arg) {
            ("count", FunctionArgExpr::Wildcard) => Ok(Aggregate::CountRows),
            ("count" | "sum", FunctionArgExpr::Expr(e)) => {
                if let Some(col) = self.column_of(e)? {
                    if name == "sum" {
                        self.set_kind(col, Kind::Number, e)?;
                        return Ok(Aggregate::Sum(col));
                    }
                    return Ok(Aggregate::CountColumn(col));
                }
                match (name.as_str(), literal(e)) {
                    ("count", Some(Ok(Cell::Null))) => Ok(Aggregate::CountNull),
                    ("count", Some(Ok(_))) => Ok(Aggregate::CountRows),
                    _ => Err(self.unsupported(format!(
                        "takes {}({}); query-aware seeding sums or counts a column",
                        name.to_uppercase(),
                        fragment(e)
                    ))),
                }
            }
            (_, other) => Err(self.unsupported(format!(
                "takes {}({})",
                name.to_uppercase(),
                fragment(other)
            ))),
        }
    }

    fn function_name(&self, f: &Function) -> Result<String, SeedPlanError> {
        let parts = self.name_parts(&f.name)?;
        let name = match parts.as_slice() {
            [n] => n.clone(),
            _ => String::new(),
        };
        if name != "count" && name != "sum" {
            return Err(self.unsupported(format!(
                "selects the function {} (only COUNT and SUM are seeded)",
                fragment(&f.name)
            )));
        }
        let extras = [
            (f.filter.is_some(), "FILTER"),
            (f.over.is_some(), "OVER (a window)"),
            (!f.within_group.is_empty(), "WITHIN GROUP"),
            (f.null_treatment.is_some(), "IGNORE/RESPECT NULLS"),
            (
                !matches!(f.parameters, FunctionArguments::None),
                "parameters",
            ),
            (f.uses_odbc_syntax, "ODBC syntax"),
        ];
        if let Some((_, what)) = extras.iter().find(|(on, _)| *on) {
            return Err(self.unsupported(format!("uses {what} on {}", name.to_uppercase())));
        }
        Ok(name)
    }

    fn single_argument<'a>(
        &self,
        f: &'a Function,
        name: &str,
    ) -> Result<&'a FunctionArgExpr, SeedPlanError> {
        let FunctionArguments::List(list) = &f.args else {
            return Err(self.unsupported(format!(
                "calls {} without an argument list",
                name.to_uppercase()
            )));
        };
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(self.unsupported(format!(
                "uses {} (DISTINCT, ORDER BY ... inside the call)",
                fragment(f)
            )));
        }
        match list.args.as_slice() {
            [FunctionArg::Unnamed(a)] => Ok(a),
            _ => Err(self.unsupported(format!(
                "calls {} with other than one argument",
                fragment(f)
            ))),
        }
    }

    fn set_kind(&mut self, col: usize, kind: Kind, at: &Expr) -> Result<(), SeedPlanError> {
        match self.columns[col].1 {
            None => {
                self.columns[col].1 = Some(kind);
                Ok(())
            }
            Some(k) if k == kind => Ok(()),
            Some(k) => Err(self.unsupported(format!(
                "uses the column `{}` as {} and as {} (at {}), which PostgreSQL refuses for one column",
                self.columns[col].0,
                k.name(),
                kind.name(),
                fragment(at)
            ))),
        }
    }

    /// The AND-ed conditions of a WHERE. Iterative: a long `a AND b AND ...` is a deep tree.
    fn conditions_of(&mut self, root: &Expr) -> Result<Vec<ColumnCondition>, SeedPlanError> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(e) = stack.pop() {
            match e {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::And,
                    right,
                } => {
                    stack.push(right);
                    stack.push(left);
                }
                Expr::Nested(inner) => stack.push(inner),
                leaf => out.push(self.condition_of(leaf)?),
            }
        }
        Ok(out)
    }

    fn condition_of(&mut self, e: &Expr) -> Result<ColumnCondition, SeedPlanError> {
        let text = e.to_string();
        let literal_of = |p: &Planner, x: &Expr| -> Result<Cell, SeedPlanError> {
            match literal(x) {
                Some(Ok(c)) => Ok(c),
                Some(Err(m)) => Err(p.unsupported(format!("compares with {}: {m}", fragment(x)))),
                None => Err(p.unsupported(format!(
                    "compares with {}, which is not a literal (numbers, 'strings', true/false)",
                    fragment(x)
                ))),
            }
        };
        let (column, condition) = match e {
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Eq => CmpOp::Eq,
                    BinaryOperator::NotEq => CmpOp::NotEq,
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::Gt => CmpOp::Gt,
                    BinaryOperator::LtEq => CmpOp::LtEq,
                    BinaryOperator::GtEq => CmpOp::GtEq,
                    BinaryOperator::Or => {
                        return Err(self.unsupported(format!("uses OR ({})", fragment(e))))
                    }
                    other => {
                        return Err(self
                            .unsupported(format!("uses the operator {other} ({})", fragment(e))))
                    }
                };
                match (self.column_of(left)?, self.column_of(right)?) {
                    (Some(_), Some(_)) => {
                        return Err(
                            self.unsupported(format!("compares two columns ({})", fragment(e)))
                        )
                    }
                    (Some(c), None) => (c, Condition::Compare(op, literal_of(self, right)?)),
                    (None, Some(c)) => {
                        (c, Condition::Compare(op.flipped(), literal_of(self, left)?))
                    }
                    (None, None) => {
                        return Err(self.unsupported(format!(
                            "has a condition on no column ({})",
                            fragment(e)
                        )))
                    }
                }
            }
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated,
                global: false,
            } => {
                let Some(c) = self.column_of(expr)? else {
                    return Err(self.unsupported(format!(
                        "tests {} IN (...), which is not a column",
                        fragment(expr)
                    )));
                };
                let list = list
                    .iter()
                    .map(|x| literal_of(self, x))
                    .collect::<Result<Vec<_>, _>>()?;
                (
                    c,
                    Condition::In {
                        list,
                        negated: *negated,
                    },
                )
            }
            Expr::In { .. } | Expr::Exists { .. } | Expr::Subquery(_) => {
                return Err(self.unsupported(format!("uses a subquery ({})", fragment(e))))
            }
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => {
                let Some(c) = self.column_of(expr)? else {
                    return Err(self.unsupported(format!(
                        "tests {} BETWEEN ..., which is not a column",
                        fragment(expr)
                    )));
                };
                (
                    c,
                    Condition::Between(literal_of(self, low)?, literal_of(self, high)?),
                )
            }
            Expr::IsNull(x) | Expr::IsNotNull(x) => {
                let Some(c) = self.column_of(x)? else {
                    return Err(
                        self.unsupported(format!("tests {}, which is not a column", fragment(e)))
                    );
                };
                let cond = if matches!(e, Expr::IsNull(_)) {
                    Condition::IsNull
                } else {
                    Condition::IsNotNull
                };
                (c, cond)
            }
            Expr::Like { .. } | Expr::ILike { .. } | Expr::SimilarTo { .. } => {
                return Err(self.unsupported(format!("uses LIKE ({})", fragment(e))))
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                ..
            } => return Err(self.unsupported(format!("uses NOT ({})", fragment(e)))),
            Expr::Function(f) => {
                return Err(self.unsupported(format!(
                    "calls the function {} in the WHERE",
                    fragment(&f.name)
                )))
            }
            other => return Err(self.unsupported(format!("has the condition {}", fragment(other)))),
        };
        for lit in condition.literals() {
            if let Some(k) = lit.kind() {
                self.set_kind(column, k, e)?;
            }
        }
        Ok(ColumnCondition {
            column,
            condition,
            text,
        })
    }

    fn finish(
        self,
        aggregate: Aggregate,
        conditions: Vec<ColumnCondition>,
    ) -> Result<SeedPlan, SeedPlanError> {
        let mut row_number_column = "seed_row".to_string();
        while self.columns.iter().any(|(n, _)| *n == row_number_column) {
            row_number_column.push('_');
        }
        let columns: Vec<ColumnPlan> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (name, kind))| ColumnPlan {
                name: name.clone(),
                sql_type: column_type(*kind, conditions.iter().filter(|c| c.column == i)),
            })
            .collect();
        let table = TablePlan {
            schema: self.schema.clone(),
            name: self.table.clone(),
            row_number_column,
            columns,
        };
        let mut plan = SeedPlan {
            query: self.query.to_string(),
            rows: 0,
            table,
            aggregate,
            conditions,
            filling: Filling::Impossible(String::new()),
            decoys: Vec::new(),
        };
        plan.filling = plan.filling();
        plan.decoys = plan.decoys();
        Ok(plan)
    }
}

fn column_type<'a>(
    kind: Option<Kind>,
    conditions: impl Iterator<Item = &'a ColumnCondition>,
) -> SqlType {
    match kind {
        Some(Kind::Text) | None => SqlType::Text,
        Some(Kind::Bool) => SqlType::Boolean,
        Some(Kind::Number) => {
            let mut ty = SqlType::Integer;
            for c in conditions {
                for lit in c.condition.literals() {
                    if let Cell::Number(d) = lit {
                        let needed = match d.integer() {
                            Some(n) if i32::try_from(n).is_ok() => SqlType::Integer,
                            Some(n) if i64::try_from(n).is_ok() => SqlType::BigInt,
                            _ => SqlType::Numeric,
                        };
                        ty = match (ty, needed) {
                            (SqlType::Numeric, _) | (_, SqlType::Numeric) => SqlType::Numeric,
                            (SqlType::BigInt, _) | (_, SqlType::BigInt) => SqlType::BigInt,
                            _ => SqlType::Integer,
                        };
                    }
                }
            }
            ty
        }
    }
}

/// A literal of the query as a cell: Some(Err) for a literal the planner does not take, None for a non-literal.
fn literal(e: &Expr) -> Option<Result<Cell, String>> {
    match e {
        Expr::Nested(inner) => literal(inner),
        Expr::UnaryOp {
            op: op @ (UnaryOperator::Minus | UnaryOperator::Plus),
            expr,
        } => match literal(expr)? {
            Ok(Cell::Number(d)) => Some(Ok(Cell::Number(if *op == UnaryOperator::Minus {
                d.neg()
            } else {
                d
            }))),
            Ok(_) => Some(Err("a sign before a non-number".into())),
            Err(m) => Some(Err(m)),
        },
        Expr::Value(v) => Some(match &v.value {
            Value::Number(n, _) => Decimal::parse(n).map(Cell::Number).ok_or_else(|| {
                format!(
                    "the number has more digits than seeding computes with exactly (at most {MAX_SCALE} after the \
                     point, below 10^20)"
                )
            }),
            Value::SingleQuotedString(s) => Ok(Cell::Text(s.clone())),
            Value::Boolean(b) => Ok(Cell::Bool(*b)),
            Value::Null => Ok(Cell::Null),
            other => Err(format!(
                "{} literals are not seeded (write 'plain strings' or numbers)",
                fragment(other)
            )),
        }),
        _ => None,
    }
}
