module github.com/analyzerd/analyzerd/tools/ctlharness

go 1.26.0
