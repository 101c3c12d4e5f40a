"""Read a junit.xml with junitparser (a JUnit consumer used by CI tooling) and print what it understood as JSON.

Usage: python3 read_junit.py JUNIT_XML
The harness's tests compare this against the verdicts the file was written from.
"""
import json
import sys

from junitparser import Error, Failure, JUnitXml, Skipped


def main() -> None:
    xml = JUnitXml.fromfile(sys.argv[1])
    suites = []
    for suite in xml:
        cases = []
        for case in suite:
            results = []
            for r in case.result:
                kind = (
                    "failure" if isinstance(r, Failure)
                    else "error" if isinstance(r, Error)
                    else "skipped" if isinstance(r, Skipped)
                    else type(r).__name__
                )
                results.append({"kind": kind, "message": r.message, "type": r.type, "text": r.text})
            cases.append({
                "name": case.name,
                "classname": case.classname,
                "time": case.time,
                "results": results,
                "system_out": case.system_out,
            })
        suites.append({
            "name": suite.name,
            "tests": suite.tests,
            "failures": suite.failures,
            "errors": suite.errors,
            "cases": cases,
        })
    json.dump({"suites": suites}, sys.stdout)


if __name__ == "__main__":
    main()
