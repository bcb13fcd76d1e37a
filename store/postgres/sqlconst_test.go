package postgres_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// SQL is only ever parameterised: every statement the adapter sends (Exec, Query, QueryRow,
// Batch.Queue) is a constant of the source (literals, named constants of the package or of the function,
// and their concatenation), so no value can reach the SQL text; values travel as $n arguments. The
// helpers that take a piece of SQL as a parameter (sqlHelpers) are checked at their call sites instead,
// and an identifier quoted by pgx.Identifier.Sanitize counts as constant. The check reads the package's
// own source.
func TestSQLIsConstant(t *testing.T) {
	// sqlHelpers are the functions whose parameters at these positions become SQL text.
	sqlHelpers := map[string][]int{"mustExist": {1}, "newestFollows": {2, 3, 4}}
	// sqlSenders are the methods that send SQL, with the position of the statement.
	sqlSenders := map[string]int{"Exec": 1, "Query": 1, "QueryRow": 1, "Queue": 0}

	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var parsed []*ast.File
	pkgConsts := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, f)
		for _, d := range f.Decls {
			collectConsts(d, pkgConsts)
		}
	}
	checked := 0
	for _, f := range parsed {
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			consts := map[string]bool{}
			for k := range pkgConsts {
				consts[k] = true
			}
			for _, imp := range f.Imports { // pkg.Name of another package is a constant there
				path := strings.Trim(imp.Path.Value, `"`)
				name := path[strings.LastIndex(path, "/")+1:]
				if imp.Name != nil {
					name = imp.Name.Name
				}
				consts["pkg:"+name] = true
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				if s, ok := n.(*ast.DeclStmt); ok {
					collectConsts(s.Decl, consts)
				}
				return true
			})
			_, isHelper := sqlHelpers[fn.Name.Name]
			isAdapter := fn.Recv != nil && fn.Name.Name == "Exec" // queue.Exec hands its statement to Queue
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				var name string
				switch fun := call.Fun.(type) {
				case *ast.SelectorExpr:
					name = fun.Sel.Name
				case *ast.Ident:
					name = fun.Name
				case *ast.IndexExpr: // a generic helper with explicit type arguments
					if id, ok := fun.X.(*ast.Ident); ok {
						name = id.Name
					}
				}
				var positions []int
				if i, ok := sqlSenders[name]; ok && !isHelper && !isAdapter {
					positions = []int{i}
				}
				positions = append(positions, sqlHelpers[name]...)
				for _, i := range positions {
					if i >= len(call.Args) {
						continue
					}
					checked++
					if !isConstant(call.Args[i], consts) {
						t.Errorf("%s: %s is given SQL that is not a constant of the source: build it from constants and pass values as $n arguments",
							fset.Position(call.Args[i].Pos()), name)
					}
				}
				return true
			})
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d statements: the check does not see the adapter's SQL", checked)
	}
}

func collectConsts(d ast.Decl, into map[string]bool) {
	g, ok := d.(*ast.GenDecl)
	if !ok || g.Tok != token.CONST {
		return
	}
	for _, s := range g.Specs {
		for _, id := range s.(*ast.ValueSpec).Names {
			into[id.Name] = true
		}
	}
}

func isConstant(e ast.Expr, consts map[string]bool) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return e.Kind == token.STRING
	case *ast.Ident:
		return consts[e.Name]
	case *ast.SelectorExpr: // a name of another package, such as a channel name
		id, ok := e.X.(*ast.Ident)
		return ok && consts["pkg:"+id.Name]
	case *ast.ParenExpr:
		return isConstant(e.X, consts)
	case *ast.BinaryExpr:
		return e.Op == token.ADD && isConstant(e.X, consts) && isConstant(e.Y, consts)
	case *ast.CallExpr: // pgx.Identifier{...}.Sanitize(): a quoted identifier
		sel, ok := e.Fun.(*ast.SelectorExpr)
		return ok && sel.Sel.Name == "Sanitize"
	}
	return false
}
