"""Real-world tables (issue 6): gaps, column kinds, column control, leakage, pre-split and
Parquet files, odd encodings, the task chosen from the target, and the data source carried
from a tuning run to `dlref train --config best.toml`.

The tables are small and generated here (60-80 rows), with the faults real exports have.
"""

import numpy as np
import pandas as pd
import pytest

import helpers
from dlref.data import Source, tables, tabular


def _messy(rows=80, seed=0):
    """A passenger-like table: a row-number column, distinct names, ages with gaps, a port with
    gaps, yes/no and True/False columns, a timestamp, a constant column and a 0/1 target."""
    rng = np.random.default_rng(seed)
    survived = (np.arange(rows) % 5 < 2).astype(int)
    age = rng.normal(30, 10, rows).round(1) + 8 * survived
    table = pd.DataFrame({
        "PassengerId": np.arange(1, rows + 1),
        "Name": [f"Passenger {i}, Mr" for i in range(rows)],
        "Age": np.where(np.arange(rows) % 7 == 3, np.nan, age),
        "Port": np.where(np.arange(rows) % 11 == 5, None,
                         np.array(["S", "C", "Q"], dtype=object)[np.arange(rows) % 3]),
        "Alone": np.where(np.arange(rows) % 2 == 0, "yes", "no"),
        "Member": np.where(np.arange(rows) % 4 == 0, "True", "False"),
        "Booked": pd.date_range("2024-01-01 06:00", periods=rows, freq="37h").strftime(
            "%Y-%m-%d %H:%M"),
        "Ship": "Titanic",
        "Survived": survived,
    })
    return table


def _write(table, path, **options):
    table.to_csv(path, index=False, **options)
    return path


def _load(path, task="binary", target="Survived", **options):
    source = Source(data=str(path), target=target, **options)
    return tabular.load(source, task, None, seed=0, val_fraction=0.2, test_fraction=0.2)


# --- Column kinds and gaps ---------------------------------------------------------------------


def test_messy_table_kinds_and_notices(tmp_path):
    table = _messy()
    table["Gold"] = np.nan  # A column nobody filled in (Tweets.csv's airline_sentiment_gold).
    table["tweet_id"] = 570306133677760513 - 997 * np.arange(len(table))  # Names rows.
    table["PAID"] = 100 + 7 * np.arange(len(table))  # Amounts: a quantity, not an identifier.
    data = _load(_write(table, tmp_path / "passengers.csv"))
    kinds = {spec["name"]: spec["kind"] for spec in data.meta["schema"]}
    assert kinds == {"Age": "numeric", "Port": "category", "Alone": "boolean",
                     "Member": "boolean", "Booked": "date", "PAID": "numeric"}
    assert set(data.meta["left_out"]) == {"PassengerId", "Name", "Ship", "Gold", "tweet_id"}
    assert "an identifier by its name" in data.meta["left_out"]["tweet_id"]
    assert "row numbers" in data.meta["left_out"]["PassengerId"]
    assert "constant" in data.meta["left_out"]["Ship"]
    assert data.meta["left_out"]["Gold"] == "empty in every row"
    features = data.meta["features"]
    assert {"Age", "Age_missing", "Port=(missing)", "Alone", "Member", "Booked_month",
            "Booked_hour", "Booked_days"} <= set(features)
    text = "\n".join(data.notes)
    assert "Left out: PassengerId" in text and "--features" in text
    assert "Missing values: imputed Age (11 rows), Port (7 rows)" in text
    assert "Booked" in text and "date" in text


def test_impute_uses_training_medians_and_indicators(tmp_path):
    data = _load(_write(_messy(), tmp_path / "p.csv"))
    age = next(c for c in data.meta["columns"] if c["name"] == "Age")
    index = data.meta["features"].index("Age_missing")
    indicators = np.concatenate([data.train[0][:, index], data.val[0][:, index],
                                 data.test[0][:, index]])
    assert indicators.sum() == 11 and set(np.unique(indicators)) == {0.0, 1.0}
    assert age["indicator"] and np.isfinite(age["fill"])
    assert np.isfinite(data.train[0]).all()
    alone = next(c for c in data.meta["columns"] if c["name"] == "Alone")
    column = data.train[0][:, data.meta["features"].index("Alone")]
    values = set(np.round(column * alone["std"] + alone["mean"], 5))
    assert values == {0.0, 1.0}  # yes / no became 1 / 0 before scaling.


def test_missing_drop_and_error(tmp_path):
    path = _write(_messy(), tmp_path / "p.csv")
    dropped = _load(path, missing="drop")
    assert sum(len(split[1]) for split in (dropped.train, dropped.val, dropped.test)) == 80 - 17
    assert any("dropped 17 rows of 80 with a gap (in Age, Port)" in n for n in dropped.notes)
    assert "Age_missing" not in dropped.meta["features"]
    from dlref.errors import DlrefError

    with pytest.raises(DlrefError, match="'Age': missing in 11 rows .file lines 5, 12"):
        _load(path, missing="error")


def test_rows_without_target_are_dropped_with_a_count(tmp_path):
    table = _messy()
    table.loc[[4, 9, 30], "Survived"] = np.nan
    data = _load(_write(table, tmp_path / "p.csv"))
    assert any("Dropped 3 rows whose target 'Survived' is missing" in n for n in data.notes)
    assert sum(len(split[1]) for split in (data.train, data.val, data.test)) == 77
    assert data.meta["classes"] == ["0", "1"]  # Read as 0.0 / 1.0 floats: still named 0 and 1.


def test_dates_become_numeric_parts(tmp_path):
    data = _load(_write(_messy(), tmp_path / "p.csv"), features=("Booked", "Age"))
    booked = next(s for s in data.meta["schema"] if s["name"] == "Booked")
    assert booked["origin"].startswith("2024-01-01T06:00")
    assert booked["parts"] == ["month", "day", "dayofweek", "hour"]  # One year: no year part.
    assert data.meta["features"][:5] == ["Age", "Age_missing", "Booked_month", "Booked_day",
                                         "Booked_dayofweek"]


def test_many_categories_keep_the_most_frequent(tmp_path):
    table = _messy()
    table["Cabin"] = [f"C{i % 30}" if i % 2 else "C0" for i in range(80)]
    data = _load(_write(table, tmp_path / "p.csv"), max_categories=5)
    cabin = next(c for c in data.meta["columns"] if c["name"] == "Cabin")
    assert len(cabin["categories"]) == 5 and "C0" in cabin["categories"] and cabin["other"]
    assert "Cabin=(other)" in data.meta["features"]
    assert any("5 most frequent values + (other)" in n for n in data.notes)


def test_yes_and_no_in_other_languages(tmp_path):
    rows = "".join(f"{i * 7 % 17},{'Sí' if i % 3 else 'No'},{'Ja' if i % 2 else 'Nein'}\n"
                   for i in range(40))
    path = tmp_path / "de.csv"
    path.write_text("a,b,Kündigung\n" + rows, encoding="utf-8")
    data = _load(path, target="Kündigung")
    assert data.meta["positive_class"] == "Ja"  # Not 'Nein', the alphabetical second.
    assert {spec["name"]: spec["kind"] for spec in data.meta["schema"]}["b"] == "boolean"


def test_headers_with_stray_spaces(tmp_path):
    path = tmp_path / "spaces.csv"
    rows = "".join(f"{i * 7 % 17}, {i % 5} ,{'yes' if i % 2 else 'no'}\n" for i in range(40))
    path.write_text(" a , b ,label \n" + rows, encoding="utf-8")
    data = _load(path, target="label", drop=("b",))
    assert data.meta["features"] == ["a"]
    assert data.meta["positive_class"] == "yes"


@pytest.mark.parametrize("above", [
    "Passenger report,,,,,,,,\nExported 2024-01-05 by J. Smith,,,,,,,,\n,,,,,,,,\n",
    '"Data Source","Shipping Registry",\n\n"Last Updated Date","2024-06-28",\n',
])
def test_a_title_above_the_header_row_is_skipped_with_a_note(above, tmp_path):
    path = tmp_path / "report.csv"
    table = _messy().drop(columns=["Member", "Booked", "Ship"])
    path.write_text(above + table.to_csv(index=False), encoding="utf-8")
    data = _load(path, missing="drop")
    (note,) = [note for note in data.notes if note.startswith("Skipped 3 lines")]
    assert "header row of report.csv (line 4)" in note
    assert ("'Passenger report'" in note) == above.startswith("Passenger")
    from dlref.errors import DlrefError

    with pytest.raises(DlrefError, match="'Age': missing in 11 rows .file lines 8, 15"):
        _load(path, missing="error")  # Lines of the file, counted from its first line.
    plain = tmp_path / "plain.csv"
    plain.write_text(",a,b\n0,1,x\n1,,y\n2,3,x\n3,4,y\n", encoding="utf-8")  # An index column.
    frame, notes = tables.read_table(plain)
    assert list(frame.columns) == ["Unnamed: 0", "a", "b"] and len(frame) == 4 and not notes


def test_a_file_without_a_header_row_gets_numbered_columns(tmp_path):
    spam = tmp_path / "SMSSpamCollection"
    spam.write_text("ham\tGo until jurong point, crazy\nham\tOk lar... Joking wif u oni\n"
                    "spam\tFree entry in 2 a wkly comp\nham\tU dun say so early hor\n",
                    encoding="utf-8")
    frame, notes = tables.read_table(spam)
    assert list(frame.columns) == ["column_1", "column_2"] and len(frame) == 4
    assert "its first line holds values ('ham' recurs below it in column 1, 2 times" in notes[0]
    numbers = tmp_path / "wine.data"
    numbers.write_text("1,14.23,1.71\n1,13.2,1.78\n2,12.37,0.94\n", encoding="utf-8")
    frame, notes = tables.read_table(numbers)
    assert frame.shape == (3, 3) and frame["column_2"].iloc[0] == 14.23
    assert "(only numbers: 1, 14.23, 1.71)" in notes[0]


def test_header_rows_repeated_in_a_joined_file_are_dropped(tmp_path):
    table = _messy(30)
    path = tmp_path / "joined.csv"  # Three exports joined with cat: the header three times.
    path.write_text("".join(table.iloc[part].to_csv(index=False)
                            for part in (slice(0, 10), slice(10, 20), slice(20, 30))))
    frame, notes = tables.read_table(path)
    assert len(frame) == 30 and list(frame.columns) == list(table.columns)
    assert "Dropped 2 rows repeating the header row" in notes[0]
    assert pd.api.types.is_numeric_dtype(frame["Age"]) and frame["Survived"].sum() == 12
    from dlref.errors import DlrefError

    with pytest.raises(DlrefError, match=r"'Age': missing in 4 rows .file lines 5, 13, 20, 28\)"):
        _load(path, missing="error")  # Lines of the file: the repeated headers counted.


def test_a_total_row_below_a_table_is_left_out(tmp_path):
    table = _messy(20)[["Port", "Age", "Survived"]]
    table["Port"] = table["Port"].fillna("S")
    total = pd.DataFrame({"Port": ["Total"], "Age": [table["Age"].sum()], "Survived": [8]})
    frame, notes = tables.read_table(_write(pd.concat([table, total]), tmp_path / "t.csv"))
    assert len(frame) == 20 and "Total" not in set(frame["Port"])
    assert "Left out 1 row at the end named as a summary in 'Port' ('Total')" in notes[0]
    table.loc[5, "Port"] = "Total"  # Also inside the table: a category, kept.
    frame, notes = tables.read_table(_write(pd.concat([table, total]), tmp_path / "t.csv"))
    assert len(frame) == 21 and not notes


def test_predict_reads_headerless_rows_without_the_target_column(tmp_path, runs_root):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).round(3)
    label = (x[:, 0] > 0).astype(int) + 1
    path = tmp_path / "train.data"  # The class first, as in UCI's wine.data.
    path.write_text("".join(f"{c},{a},{b},{d}\n" for c, (a, b, d) in zip(label, x, strict=True)))
    helpers.assert_ok(helpers.invoke("train", "binary", "--data", path, "--target", "column_1",
                                     "--epochs", 1))
    new = tmp_path / "new.data"
    new.write_text("".join(f"{a},{b},{d}\n" for a, b, d in x[:4]))
    result = helpers.invoke("predict", helpers.only_run(runs_root, "binary"), "--data", new,
                            "--output", "-")
    helpers.assert_ok(result)
    assert "one fewer than in training" in result.stderr
    assert "Wrote 4 predictions to standard output" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "column_2,column_3,column_4,predicted_column_1,probability_1"
    assert len(lines) == 5 and lines[1].startswith(f"{x[0, 0]},{x[0, 1]},")


def test_a_compressed_csv_whose_first_mib_ends_inside_a_character(tmp_path):
    import gzip

    body = "name,city\n" + "".join(f"p{i},Zürich€\n" for i in range(120_000))
    assert body.encode()[:1 << 20][-2:] == "€".encode()[:2]  # The sample cuts the euro sign.
    path = tmp_path / "cities.csv.gz"
    path.write_bytes(gzip.compress(body.encode()))
    frame, notes = tables.read_table(path)
    assert frame["city"].iloc[0] == "Zürich€" and not notes  # UTF-8, not Windows-1252.


def test_a_statistics_office_export_with_a_long_preamble(tmp_path):
    # As the ONS writes them: "Key:,value" lines, one quoted across lines, a rule, a blank
    # line under the header, and a trailing comma on every row.
    preamble = ('Dataset Name:,"RT331601"\nDescription:,"Area and population\n\nCompiled '
                'from Regional Trends 33, 1998."\n' + "".join(f'Key {i}:,"value {i}"\n'
                                                           for i in range(12))
                + "=====\nTable\n")
    rows = "".join(f'"Region {i}","{i * 10}.00","{i % 7}.50",\n' for i in range(30))
    path = tmp_path / "ons.csv.gz"
    import gzip

    path.write_bytes(gzip.compress((preamble + ' ,"Area","Density",\n\n' + rows).encode()))
    frame, notes = tables.read_table(path)
    assert list(frame.columns[1:3]) == ["Area", "Density"] and len(frame) == 30
    assert frame.iloc[0, 0] == "Region 0" and frame["Area"].iloc[3] == 30.0
    assert "Skipped 18 lines above the header row of ons.csv.gz (line 19)" in notes[0]


def test_a_trailing_comma_on_the_header_only_and_a_sparse_last_column(tmp_path):
    bls = tmp_path / "unemp.csv"  # As the BLS writes them: a trailing comma on the header.
    bls.write_text("Series Id:           LNS14000000Q\n\nSeasonally Adjusted\n\n"
                   "Series id,Year,Period,Value,\n"
                   + "".join(f"LNS14000000Q,{1959 + i // 4},Q0{i % 4 + 1},{5 + i % 3}.1\n"
                             for i in range(12)), encoding="utf-8")
    frame, notes = tables.read_table(bls)
    assert list(frame.columns[:4]) == ["Series id", "Year", "Period", "Value"]
    assert len(frame) == 12 and "Skipped 4 lines" in notes[0]
    sparse = tmp_path / "people.csv"  # A last column mostly empty: no preamble to find.
    sparse.write_text("name,age,notes\n" + "".join(f"P{i},{20 + i},\n" for i in range(9))
                      + "Sue,35,late\n", encoding="utf-8")
    frame, notes = tables.read_table(sparse)
    assert list(frame.columns) == ["name", "age", "notes"] and len(frame) == 10 and not notes


def test_an_excel_workbook_is_read_like_a_csv(tmp_path):
    table = _messy().drop(columns=["Member", "Ship"])
    table["Booked"] = pd.to_datetime(table["Booked"])  # Excel date cells.
    path = tmp_path / "passengers.xlsx"
    with pd.ExcelWriter(path) as book:
        pd.DataFrame().to_excel(book, sheet_name="Cover")  # Empty: passed over.
        pd.DataFrame({"About": ["Passengers of 1912.", "Ages in years."]}).to_excel(
            book, sheet_name="Read me", index=False)  # Notes in one column: passed over.
        pd.DataFrame({"Sheet": ["List"], "Title": ["Passengers"]}).to_excel(
            book, sheet_name="Contents", index=False)  # A small table: not the largest.
        pd.DataFrame([["Passenger list"], ["As of 1912-04-20"]]).to_excel(
            book, sheet_name="List", header=False, index=False)
        table.to_excel(book, sheet_name="List", startrow=3, startcol=1, index=False)
    frame, notes = tables.read_table(path)
    assert list(frame.columns) == list(table.columns) and len(frame) == 80
    assert "Read the sheet 'List' of passengers.xlsx" in notes[0]
    assert "Skipped 3 lines above the header row of passengers.xlsx (line 4)" in notes[1]
    assert str(frame["Booked"].iloc[0]) == str(table["Booked"].iloc[0])
    data = _load(path)
    assert any(name.startswith("Booked_") for name in data.meta["features"])  # A date.
    from dlref.errors import DlrefError

    with pytest.raises(DlrefError, match="'Age': missing in 11 rows .file lines 8, 15"):
        _load(path, missing="error")  # The sheet's row numbers.
    with pytest.raises(DlrefError, match="No target column 'Fare'.* Read the sheet 'List' of "
                                         "passengers.xlsx, the largest table .4 sheets"):
        _load(path, target="Fare")
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(DlrefError, match="Could not read .*broken.xlsx as a spreadsheet"):
        tables.read_table(broken)


def test_excel_97_and_opendocument_sheets_and_text_or_html_named_xls(tmp_path):
    import xlwt

    book = xlwt.Workbook()  # Excel 97-2003, as UCI's credit-default data: codes over names.
    sheet = book.add_sheet("Data")
    for column, (code, name) in enumerate([("", "ID"), ("X1", "LIMIT_BAL"), ("X2", "paid on"),
                                           ("Y", "default payment next month")]):
        sheet.write(0, column, code)
        sheet.write(1, column, name)
    day = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    for row in range(30):
        sheet.write(row + 2, 0, row + 1)
        sheet.write(row + 2, 1, 10000 * (row % 5 + 1))
        sheet.write(row + 2, 2, 45292 + row, day)  # Excel's day number of 2024-01-01.
        sheet.write(row + 2, 3, row % 2)
    book.save(tmp_path / "clients.xls")
    frame, notes = tables.read_table(tmp_path / "clients.xls")
    assert list(frame.columns) == ["ID", "LIMIT_BAL", "paid on", "default payment next month"]
    assert len(frame) == 30 and frame["LIMIT_BAL"].dtype.kind in "if"
    assert str(frame["paid on"].iloc[0]).startswith("2024-01-01")
    assert "clients.xls has two header rows" in notes[0]
    from dlref.data import target
    from dlref.errors import DlrefError

    with pytest.raises(DlrefError, match="'Y' is the upper header row's name of the column "
                                         "'default payment next month'"):
        target.check_present(frame, "Y", "clients.xls")
    table = _messy().drop(columns=["Booked"])
    table.to_excel(tmp_path / "passengers.ods", index=False, engine="odf")
    frame, notes = tables.read_table(tmp_path / "passengers.ods")
    assert list(frame.columns) == list(table.columns) and len(frame) == 80 and not notes
    assert frame["Age"].isna().sum() == table["Age"].isna().sum()
    (tmp_path / "export.xls").write_text("Id\tAmount\tPaid\n" + "".join(
        f"{i}\t{i * 2.5}\t{i % 2}\n" for i in range(20)), encoding="utf-16")
    frame, notes = tables.read_table(tmp_path / "export.xls")  # A web app's "Excel" export.
    assert list(frame.columns) == ["Id", "Amount", "Paid"] and frame["Amount"].iloc[3] == 7.5
    assert "export.xls is a text table, not a workbook" in notes[0]
    (tmp_path / "page.xls").write_text("<html><table><tr><td>1</td></tr></table></html>")
    with pytest.raises(DlrefError, match="is a web page .HTML or XML. named .xls"):
        tables.read_table(tmp_path / "page.xls")


@pytest.mark.parametrize("text, names, first_line", [
    # Names over units; the date column has none.
    ("Date,Temp,Rain\n,degC,mm\n", ["Date", "Temp (degC)", "Rain (mm)"], 3),
    # Group names in merged cells over their parts.
    ("Store,2023,,2024,\n,Q1,Q2,Q1,Q2\n", ["Store", "2023 Q1", "2023 Q2", "2024 Q1", "2024 Q2"],
     3),
    # Codes over long names, after a title line.
    ("Clients report\n\nA,B,C\nclient id,credit limit in dollars,defaulted next month\n",
     ["client id", "credit limit in dollars", "defaulted next month"], 5),
])
def test_a_second_header_row_names_the_columns_with_the_first(tmp_path, text, names,
                                                                first_line):
    dated = names[0] == "Date"
    rows = ["".join([f"2024-01-{i + 1:02d},"] * dated)
            + ",".join(str(i * (c + 1)) for c in range(len(names) - dated)) for i in range(12)]
    path = tmp_path / "two.csv"
    path.write_text(text + "\n".join(rows) + "\n")
    frame, notes = tables.read_table(path)
    assert list(frame.columns) == names and len(frame) == 12
    assert frame[names[1]].dtype.kind in "if" and "two header rows" in notes[-1]
    assert tables.file_lines([0], frame) == str(first_line)


@pytest.mark.parametrize("first", ["unknown,none,none", "Ann,,", "a,b,c"])
def test_a_first_row_of_words_is_data_where_they_are_no_names(tmp_path, first):
    # Words for missing values over numbers; a name over names, its numbers missing; words
    # over words.
    below = "".join(f"{i},{i * 2},{i * 3}\n" if first.startswith("unknown") else
                    f"P{i},{i * 2},{i * 3}\n" if first.startswith("Ann") else
                    f"w{i},v{i},u{i}\n" for i in range(12))
    path = tmp_path / "one.csv"
    path.write_text("name,x,y\n" + first + "\n" + below)
    frame, notes = tables.read_table(path)
    assert list(frame.columns) == ["name", "x", "y"] and len(frame) == 13
    assert not any("two header rows" in note for note in notes)


def test_codes_for_no_value_and_empty_rows(tmp_path):
    rng = np.random.default_rng(0)
    co = rng.uniform(0.1, 11.9, 60).round(1)
    co[[3, 17, 40]] = -200  # UCI's air quality file.
    temp = rng.uniform(-5, 30, 60).round(1)  # Negative values too, far above the code.
    temp[[5, 6]] = -999
    price = rng.uniform(5, 50, 60).round(2)  # A price of 999 is a price: positive, left alone.
    price[[1, 2]] = 999
    level = rng.uniform(-60, 60, 60).round(1)  # -100 lies within the values' spread.
    level[[8, 9]] = -100
    once = rng.uniform(0, 5, 60).round(1)  # One -999 alone: an outlier, not a code.
    once[11] = -999
    table = pd.DataFrame({"co": co, "temp": temp, "price": price, "level": level,
                          "once": once})
    text = table.to_csv(index=False).splitlines()
    text[6:6] = [",,,,", ",,,,"]  # Empty rows, as a sheet's export has them.
    path = tmp_path / "air.csv"
    path.write_text("\n".join(text) + "\n,,,,\n")
    frame, notes = tables.read_table(path)
    assert len(frame) == 60 and frame["co"].isna().sum() == 3
    assert frame["temp"].isna().sum() == 2 and frame["price"].max() == 999
    assert frame["level"].min() == -100 and frame["once"].min() == -999
    assert "Dropped 3 rows without any value" in notes[0]
    assert notes[1] == ("Read 'co' -200 (3 rows), 'temp' -999 (2 rows) as missing: codes for "
                        "\"no value\", below the column's other values.")
    # File lines still count the dropped rows: data row 17 is line 21 (the header and 2 empty
    # rows above it).
    assert tables.file_lines(np.flatnonzero(frame["co"].isna()), frame) == "5, 21, 44"


def test_a_run_reads_its_codes_for_no_value_in_new_rows(tmp_path, runs_root):
    header, rows = helpers.regression_rows(60)
    for row in rows[::9]:
        row[0] = -999  # x1's code for "no value".
    helpers.assert_ok(helpers.invoke("train", "regression", "--data", helpers.write_csv(
        tmp_path / "train.csv", header, rows), "--target", "y", "--epochs", 1))
    run = helpers.only_run(runs_root, "regression")
    x1 = next(spec for spec in helpers.read_json(run / "artifacts" / "meta.json")["schema"]
              if spec["name"] == "x1")
    assert x1["missing_code"] == -999
    new = helpers.write_csv(tmp_path / "new.csv", ["x1", "x2", "x3"],
                            [[-999, 0.5, 0.1], ["", 0.5, 0.1], [0.3, 0.5, 0.1]])
    result = helpers.invoke("predict", run, "--data", new, "--output", "-")
    helpers.assert_ok(result)  # Three rows are too few to find the code: the run knows it.
    predicted = pd.read_csv(pd.io.common.StringIO(result.stdout))["predicted_y"]
    assert predicted[0] == predicted[1] != predicted[2]


def test_columns_separated_by_runs_of_spaces(tmp_path):
    cars = tmp_path / "auto-mpg.data"  # UCI's: spaces, a tab, a quoted name, ? for unknown.
    cars.write_text("".join(
        f"{10 + i % 25}.0   {4 + 2 * (i % 3)}   {100 + 5 * i}.0      "
        f"{'?' if i == 3 else f'{70 + 2 * i}.0'}      {2000 + 37 * i}.   12.{i % 9}   "
        f"7{i % 10}  {1 + i % 3}\t\"car model {i}\"\n" for i in range(30)))
    frame, notes = tables.read_table(cars)
    assert frame.shape == (30, 9) and frame["column_9"].iloc[2] == "car model 2"
    assert frame["column_4"].isna().sum() == 1 and frame["column_5"].iloc[0] == 2000
    assert "separates its columns with spaces" in notes[0]
    assert "numbers with decimals: 10.0, 100.0, 70.0, 2000." in notes[1]
    housing = tmp_path / "housing.data"  # Right-aligned numbers, no header.
    housing.write_text("".join(f" {0.00632 * i:8.5f} {18 * (i % 2):6.2f}  {i % 2}  {24 + i:6.2f}\n"
                               for i in range(1, 30)))
    frame, notes = tables.read_table(housing)
    assert frame.shape == (29, 4) and frame["column_4"].iloc[0] == 25
    texts = tmp_path / "reviews.csv"  # One column of sentences: not a table of words.
    texts.write_text("review\n" + "".join(f"a film of {'very ' * (i % 4)}few words\n"
                                          for i in range(20)))
    frame, notes = tables.read_table(texts)
    assert list(frame.columns) == ["review"] and not notes
    texts.write_text("review,label\n" + "".join(f"a film of six words {i},pos\n"
                                                for i in range(20)))  # As many words a line.
    frame, notes = tables.read_table(texts)
    assert list(frame.columns) == ["review", "label"] and not notes


def test_lines_of_text_below_a_table_are_left_out(tmp_path):
    path = tmp_path / "airline.csv"  # As DataMarket exported it: the title again below.
    path.write_text('"Month","Passengers"\n' + "".join(
        f'"19{49 + i // 12}-{i % 12 + 1:02d}",{112 + i}\n' for i in range(30))
        + "\nInternational airline passengers: monthly totals in thousands.\n"
        + "Source: Box and Jenkins (1976),\n")
    frame, notes = tables.read_table(path)
    assert len(frame) == 30 and frame["Passengers"].max() == 141
    assert notes == ["Left out 2 lines of text below the table: 'International airline "
                     "passengers: monthly totals in thous...', 'Source: Box and Jenkins "
                     "(1976)'."]
    path.write_text("name,age\n" + "".join(f"Person {i} Smith,{20 + i}\n" for i in range(8))
                    + "Ann Lee Smith,\nMary Ann Lee Smith,\n")  # Rows with gaps: data.
    frame, notes = tables.read_table(path)
    assert len(frame) == 10 and not notes


def test_one_tab_and_one_comma_on_every_line_is_tab_separated(tmp_path):
    path = tmp_path / "SMSSpamCollection"  # label<TAB>text, each text with one comma.
    path.write_text("".join(f"{'spam' if i % 4 == 0 else 'ham'}\tHey {i}, are we on?\n"
                            for i in range(30)))
    frame, _ = tables.read_table(path)
    assert frame.shape == (30, 2) and frame["column_2"].iloc[1] == "Hey 1, are we on?"


def test_statistics_office_markers_and_ordinary_files_that_look_odd(tmp_path):
    wdi = tmp_path / "wdi.csv"  # The World Bank's databank: ".." for no value, a footer.
    wdi.write_text("Country Name,Series Name,2017 [YR2017],2018 [YR2018]\n" + "".join(
        f"C{i},GDP,{'..' if i % 3 == 0 else 100 + i},{'..' if i % 4 == 0 else 200 + i}\n"
        for i in range(30)) + "\n\nData from database: World Development Indicators\n"
        "Last Updated: 06/30/2021\n")
    frame, notes = tables.read_table(wdi)
    assert len(frame) == 30 and frame["2017 [YR2017]"].isna().sum() == 10
    assert frame["2018 [YR2018]"].dtype.kind == "f" and "Last Updated" in notes[-2]
    assert notes[-1] == ("Read words for no value as gaps in 2 columns of numbers: "
                         "2017 [YR2017], 2018 [YR2018].")
    marked = tmp_path / "ons.csv"  # A marker in the first data row: data, not names.
    marked.write_text("Date,Value\n2020-01-01,[x]\n" + "".join(
        f"2020-01-{d:02d},{d * 1.5}\n" for d in range(2, 30)))
    frame, notes = tables.read_table(marked)
    assert list(frame.columns) == ["Date", "Value"] and frame["Value"].isna().sum() == 1
    decimal = tmp_path / "de.csv"  # Decimal commas and a sheet's #DIV/0!.
    decimal.write_text("x;y\n" + "".join(f"{'#DIV/0!' if i % 5 == 0 else f'{i},5'};{i}\n"
                                         for i in range(30)))
    frame, _ = tables.read_table(decimal)
    assert frame["x"].isna().sum() == 6 and frame["x"].iloc[1] == 1.5
    pixels = tmp_path / "fer2013.csv"  # A label and 12 space-separated numbers in one cell.
    pixels.write_text("emotion,pixels\n" + "".join(
        f"{i % 7},{' '.join(str((i * j) % 256) for j in range(12))}\n" for i in range(30)))
    frame, notes = tables.read_table(pixels)
    assert list(frame.columns) == ["emotion", "pixels"] and not notes


def test_a_footer_with_commas_is_left_out_and_a_bad_line_inside_is_refused(tmp_path):
    path = tmp_path / "daily-minimum-temperatures.csv"  # As its public copy ends.
    rows = "".join(f'"1981-01-{d:02d}",{d % 7 + 10.5}\n' for d in range(1, 29))
    path.write_text('"Date","Temp"\n' + rows + "\nDaily minimum temperatures in Melbourne, "
                    "Australia, 1981-1990\n")
    frame, notes = tables.read_table(path)
    assert len(frame) == 28 and frame["Temp"].dtype.kind == "f"
    assert notes == ["Left out the last lines of daily-minimum-temperatures.csv that do not fit "
                     "the table (from line 31): 'Daily minimum temperatures in Melbourne, "
                     "Australia, 1981-...'."]
    path.write_text('"Date","Temp"\n' + rows.replace("10.5\n", "10.5,oops\n", 1) + rows)
    from dlref.errors import DlrefError

    with pytest.raises(DlrefError, match="Could not parse .*Expected 2 fields in line"):
        tables.read_table(path)  # A bad line in the middle: refused, not skipped.


def test_features_keeps_an_identifier_when_asked(tmp_path):
    data = _load(_write(_messy(), tmp_path / "p.csv"), features=("PassengerId", "Age"))
    assert data.meta["features"] == ["PassengerId", "Age", "Age_missing"]


def test_leaking_column_is_named_in_a_warning(tmp_path):
    table = _messy()
    table["Outcome"] = np.where(table["Survived"] == 1, "lived", "died")
    data = _load(_write(table, tmp_path / "p.csv"))
    assert len(data.warnings) == 1
    assert "'Outcome'" in data.warnings[0] and "--drop Outcome" in data.warnings[0]
    assert not _load(_write(_messy(), tmp_path / "clean.csv")).warnings


@pytest.mark.parametrize("classes", [2, 4])
def test_the_leakage_check_scores_as_sklearn_does(classes):
    # The check's own ROC-AUC (from ranks) on a depth-3 tree's outputs, with the ties a tree
    # gives and labels that are not 0..K-1, against sklearn's roc_auc_score.
    from sklearn.metrics import roc_auc_score
    from sklearn.tree import DecisionTreeClassifier

    from dlref.data import overview

    rng = np.random.default_rng(classes)
    y = rng.integers(0, classes, 600) * 3 + 1
    x = (y + rng.normal(0, 4, len(y))).round(1).reshape(-1, 1)
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    scores = tree.predict_proba(x)
    expected = roc_auc_score(y, scores[:, 1]) if classes == 2 else roc_auc_score(
        y, scores, multi_class="ovr", labels=tree.classes_)
    assert overview._auc(y, scores, tree.classes_) == pytest.approx(expected, abs=1e-12)
    assert 0.6 < expected < 0.99
    assert overview._auc(np.ones(5, int), np.ones((5, 1)), np.array([1])) == 0.0


def test_classes_written_two_ways_are_warned_about(tmp_path):
    from dlref.data import target

    assert target.label_warnings(["no", "yes", "Yes ", "New  York", "new york", "Oslo"],
                                 "city") == [
        "Warning: the classes 'yes' and 'Yes ' of 'city' differ only in letter case or spacing; "
        "they are trained as different classes. If they are one, write them alike in the file.",
        "Warning: the classes 'New  York' and 'new york' of 'city' differ only in letter case or "
        "spacing; they are trained as different classes. If they are one, write them alike in "
        "the file."]
    assert target.label_warnings(["0", "1"], "y") == []
    table = _messy()
    table["Port"] = np.array(["south", "South", "north"], dtype=object)[np.arange(len(table)) % 3]
    data = _load(_write(table, tmp_path / "p.csv"), task="multiclass", target="Port")
    assert data.meta["classes"] == ["South", "north", "south"]
    assert [line for line in data.warnings if "'South' and 'south'" in line]


def test_a_class_missing_from_a_split_is_warned_about_and_left_out_of_macro_f1(tmp_path):
    from dlref.recipes import multiclass

    table = _messy(rows=200)
    table["Grade"] = np.array(["A", "B", "C"], dtype=object)[np.arange(len(table)) % 3]
    table.loc[[7, 8], "Grade"] = "rare"  # 2 rows: at most two of the three splits have one.
    data = _load(_write(table, tmp_path / "p.csv"), task="multiclass", target="Grade")
    rare = data.meta["classes"].index("rare")
    in_test = int(np.sum(data.test[1] == rare))
    (line,) = [w for w in data.warnings if "class 'rare'" in w]
    assert "has 2 rows (" in line and "merging it into a neighbouring class" in line
    assert ("the test metrics cannot measure it" in line) == (in_test == 0)
    # Macro F1 over the classes in the test labels or the predictions (sklearn's default).
    y_true = np.array([0, 0, 1, 1, 2, 2])
    outputs = np.eye(4)[[0, 0, 1, 2, 2, 2]]
    meta = {"classes": ["A", "B", "C", "rare"]}
    f1 = multiclass.score(y_true, outputs, meta)["f1_macro"]
    assert f1 == pytest.approx(np.mean([1.0, 2 / 3, 0.8]))  # Not 4 classes with 'rare' at 0.
    assert multiclass.score(y_true, np.eye(4)[[0, 0, 1, 3, 2, 2]], meta)["f1_macro"] == \
        pytest.approx(np.mean([1.0, 2 / 3, 1.0, 0.0]))  # 'rare' predicted once: it counts.


def test_leaking_copy_of_a_regression_target(tmp_path):
    header, rows = helpers.regression_rows(rows=60)
    table = pd.DataFrame(rows, columns=header)
    table["y_cents"] = table["y"] * 100
    data = _load(_write(table, tmp_path / "r.csv"), "regression", "y")
    assert [w for w in data.warnings if "'y_cents'" in w and "R²" in w]


# --- Files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-8-sig"])
def test_encodings(tmp_path, encoding):
    table = _messy()
    table["Port"] = table["Port"].replace({"C": "Cherbourg é", "Q": "Queenstown ü"})
    data = _load(_write(table, tmp_path / "p.csv", encoding=encoding))
    port = next(c for c in data.meta["columns"] if c["name"] == "Port")
    assert "Cherbourg é" in port["categories"]


def test_semicolons_and_decimal_commas(tmp_path):
    data = _load(_write(_messy(), tmp_path / "p.csv", sep=";", decimal=","))
    assert any("decimal commas" in n for n in data.notes)
    kinds = {spec["name"]: spec["kind"] for spec in data.meta["schema"]}
    assert kinds["Age"] == "numeric"
    quoted = tmp_path / "quoted.csv"  # Commas between cells and in the (quoted) numbers.
    quoted.write_text('"weight","price","count"\n"51,26","1.234,5","1,234"\n'
                      '"49,5","2.000,25","12,500"\n"50","3,75","7"\n', encoding="utf-8")
    frame, notes = tables.read_table(quoted)
    assert list(frame["weight"]) == [51.26, 49.5, 50.0]
    assert list(frame["price"]) == [1234.5, 2000.25, 3.75]
    assert list(frame["count"]) == [1234, 12500, 7]  # Three digits after each comma: thousands.
    assert "decimal points in 2 columns: weight, price" in notes[0]


def test_parquet_matches_csv(tmp_path):
    table = _messy()
    from_csv = _load(_write(table, tmp_path / "p.csv"))
    table.to_parquet(tmp_path / "p.parquet", index=False)
    from_parquet = _load(tmp_path / "p.parquet")
    assert from_parquet.meta["features"] == from_csv.meta["features"]
    np.testing.assert_allclose(from_parquet.train[0], from_csv.train[0], rtol=1e-5)


def test_pre_split_files_are_used_as_given(tmp_path):
    table = _messy(120)
    train = _write(table[:80], tmp_path / "train.csv")
    val = _write(table[80:100], tmp_path / "val.csv")
    test = _write(table[100:], tmp_path / "test.csv")
    data = _load(train, val_data=str(val), test_data=str(test))
    assert [len(s[1]) for s in (data.train, data.val, data.test)] == [80, 20, 20]
    np.testing.assert_array_equal(data.test[1], table["Survived"][100:].to_numpy())
    age = next(c for c in data.meta["columns"] if c["name"] == "Age")
    assert age["fill"] == pytest.approx(table["Age"][:80].median())
    only_test = _load(train, test_data=str(test))
    assert [len(s[1]) for s in (only_test.train, only_test.val, only_test.test)] == [64, 16, 20]


def test_pre_split_file_with_an_unseen_class_is_refused(tmp_path):
    table = _messy(100)
    _write(table[:80], tmp_path / "train.csv")
    odd = table[80:].copy()
    odd["Survived"] = 2
    with pytest.raises(Exception, match="never saw: 2"):
        _load(tmp_path / "train.csv", test_data=str(_write(odd, tmp_path / "test.csv")))
    from dlref.data import target
    from dlref.errors import DlrefError

    meta = {"classes": ["<=50K", ">50K"], "positive_class": ">50K"}
    labels = pd.Series(["<=50K.", ">50K.", ">50K"], name="income")  # As in adult.test.
    with pytest.raises(DlrefError) as error:
        target.apply(labels, meta, "binary", "adult.test")
    assert ("2 of them differ from a known class only in letter case, spacing or end "
            "punctuation ('<=50K.' for '<=50K', '>50K.' for '>50K')") in str(error.value)


# --- The command line ----------------------------------------------------------------------------


@pytest.mark.parametrize("maker, target, expected, reason", [
    (lambda p: _write(_messy(), p), "Survived", "binary", "2 distinct values"),
    (lambda p: helpers.regression_csv(p), "y", "regression", "fractional numbers"),
    (lambda p: helpers.multiclass_csv(p), "species", "multiclass", "3 distinct labels"),
])
def test_train_picks_the_recipe_from_the_target(tmp_path, runs_root, maker, target, expected,
                                                 reason):
    path = maker(tmp_path / "data.csv")
    result = helpers.invoke("train", "--data", path, "--target", target, "--epochs", 1)
    helpers.assert_ok(result)
    assert f"Recipe: {expected} (target '{target}': {reason}" in result.output
    assert helpers.only_run(runs_root, expected)


def test_train_prints_the_summary_before_epoch_one(tmp_path, runs_root):
    table = _messy()
    table["Outcome"] = np.where(table["Survived"] == 1, "lived", "died")
    result = helpers.invoke("train", "binary", "--data", _write(table, tmp_path / "p.csv"),
                            "--target", "Survived", "--epochs", 1, "--drop", "Member")
    helpers.assert_ok(result)
    output = result.output
    assert output.index("Rows: read 80, train 56, validation 12, test 12") < output.index("epoch")
    assert "Left out: PassengerId" in output and "'Outcome' alone predicts" in output
    manifest = helpers.read_json(helpers.only_run(runs_root, "binary") / "run.json")
    assert manifest["source"]["drop"] == ["Member"]
    assert "Member" not in " ".join(manifest["data"].get("left_out", {}))


def test_predict_warns_about_unseen_categories_and_fills_gaps(tmp_path, runs_root):
    path = _write(_messy(), tmp_path / "p.csv")
    helpers.assert_ok(helpers.invoke("train", "binary", "--data", path, "--target", "Survived",
                                     "--epochs", 1))
    run = helpers.only_run(runs_root, "binary")
    new = _messy(6, seed=3).drop(columns=["Survived"])
    new.loc[0, "Port"] = "Belfast"
    new.loc[1, "Port"] = "Belfast"
    new.loc[2, "Age"] = np.nan
    out = tmp_path / "out.csv"
    result = helpers.invoke("predict", run, "--data", _write(new, tmp_path / "new.csv"),
                            "--output", out)
    helpers.assert_ok(result)
    assert "never seen in training (Port: 2 rows, e.g. 'Belfast')" in result.output
    predictions = pd.read_csv(out)
    assert len(predictions) == 6 and predictions["probability_1"].notna().all()


def test_config_toml_carries_the_data(tmp_path, runs_root):
    path = _write(_messy(), tmp_path / "p.csv")
    helpers.assert_ok(helpers.invoke("train", "binary", "--data", path, "--target", "Survived",
                                     "--epochs", 1, "--missing", "drop", "--name", "first"))
    first = helpers.only_run(runs_root, "binary")
    again = helpers.invoke("train", "--config", first / "config.toml", "--name", "again")
    helpers.assert_ok(again)
    # The file as the user would type it: relative to the working folder (tmp_path here).
    assert f"Data from {first / 'config.toml'}: p.csv (target Survived" in again.output
    second = next(p for p in helpers.run_folders(runs_root, "binary") if p.name.endswith("again"))
    fingerprints = [helpers.read_json(run / "run.json")["data"]["fingerprint"]
                    for run in (first, second)]
    assert fingerprints[0] == fingerprints[1]
    # Command-line data options still win over the file's.
    other = helpers.invoke("train", "--config", first / "config.toml", "--missing", "impute",
                           "--epochs", 1)
    helpers.assert_ok(other)
    assert "Age_missing" in other.output or "imputed Age" in other.output


def test_tune_best_toml_trains_on_the_same_data(tmp_path, runs_root):
    path = _write(_messy(), tmp_path / "p.csv")
    result = helpers.invoke("tune", "binary", "--data", path, "--target", "Survived",
                            "--drop", "Member", "--algorithm", "random", "--max-trials", 1,
                            "--max-epochs", 1, "--train-best")
    helpers.assert_ok(result)
    tuned = next(p for p in helpers.run_folders(runs_root, "binary") if p.name.startswith("tune-"))
    trained = next(p for p in helpers.run_folders(runs_root, "binary")
                   if not p.name.startswith("tune-"))
    assert f"Train it:     dlref train binary --config {tuned / 'best.toml'}" in result.output
    tuned_manifest = helpers.read_json(tuned / "run.json")
    trained_manifest = helpers.read_json(trained / "run.json")
    assert trained_manifest["data"]["fingerprint"] == tuned_manifest["data"]["fingerprint"]
    assert trained_manifest["source"] == tuned_manifest["source"]
    assert trained_manifest["source"]["drop"] == ["Member"]
    # The printed command, run as written, trains on the same data too.
    again = helpers.invoke("train", "binary", "--config", tuned / "best.toml", "--epochs", 1)
    helpers.assert_ok(again)
    runs = [helpers.read_json(p / "run.json") for p in helpers.run_folders(runs_root, "binary")]
    assert {m["data"]["fingerprint"] for m in runs} == {tuned_manifest["data"]["fingerprint"]}


def test_numbers_written_for_people(tmp_path):
    table = _messy()
    table["Fare"] = [f"${1000 + 37 * i:,}.50" for i in range(80)]
    table["Discount"] = [f"{i % 9}%" for i in range(80)]
    data = _load(_write(table, tmp_path / "p.csv"))
    kinds = {spec["name"]: spec["kind"] for spec in data.meta["schema"]}
    assert kinds["Fare"] == "numeric" and kinds["Discount"] == "numeric"
    fare = next(c for c in data.meta["columns"] if c["name"] == "Fare")
    assert 1000 < fare["mean"] < 1000 + 37 * 80
    assert any("thousands separators" in n and "Fare, Discount" in n for n in data.notes)


# --- Found in review -------------------------------------------------------------------------


def test_pre_split_test_file_without_the_target_is_refused(tmp_path, runs_root):
    table = _messy(100)
    train = _write(table[:80], tmp_path / "train.csv")
    test = _write(table[80:].drop(columns=["Survived"]), tmp_path / "test.csv")
    result = helpers.invoke("train", "binary", "--data", train, "--target", "Survived",
                            "--test-data", test, "--epochs", 1)
    helpers.assert_user_error(result, "--test-data has other columns", "lacks Survived")


def test_number_like_categories_match_across_files(tmp_path):
    table = _messy(100)
    table["Deck"] = ["4+" if i % 5 == 0 else str(i % 3 + 1) for i in range(100)]
    train = table[:80]
    test = table[80:].copy()
    test["Deck"] = [str(i % 3 + 1) if i % 4 else None for i in range(20)]  # Read as 1.0, 2.0...
    data = _load(_write(train, tmp_path / "train.csv"),
                 test_data=str(_write(test, tmp_path / "test.csv")))
    deck = [i for i, name in enumerate(data.meta["features"]) if name.startswith("Deck=")]
    assert data.test[0][:, deck].sum() == 15  # Every row with a deck matches a training value.
    assert not [w for w in data.warnings if "never seen" in w]


def test_day_first_dates_are_read_the_same_way_later(tmp_path):
    from dlref.data import columns

    days = pd.date_range("2020-01-01", periods=60, freq="3D")
    values = pd.Series([d.strftime("%d/%m/%Y") for d in days])
    spec, _ = columns._infer_column(values, "when", False)
    assert spec["dayfirst"] is True
    later = columns.typed(pd.DataFrame({"when": ["03/02/2020"]}), [spec])
    assert (later["when_month"].iloc[0], later["when_day"].iloc[0]) == (2.0, 3.0)


def test_negative_amounts_and_compressed_files(tmp_path):
    import gzip
    import zipfile

    table = _messy()
    table["Balance"] = [f"-${i * 13:,}.00" if i % 3 else f"({i}.50)" for i in range(80)]
    table["Port"] = table["Port"].replace({"C": "Zürich"})
    text = table.to_csv(index=False).encode("utf-8")
    with gzip.open(tmp_path / "p.csv.gz", "wb") as handle:
        handle.write(text)
    with zipfile.ZipFile(tmp_path / "p.zip", "w") as archive:
        archive.writestr("p.csv", text)
    for path in (tmp_path / "p.csv.gz", tmp_path / "p.zip"):
        data = _load(path)
        balance = next(c for c in data.meta["columns"] if c["name"] == "Balance")
        assert balance["kind"] == "numeric" and balance["mean"] < 0 and not balance["indicator"]
        port = next(c for c in data.meta["columns"] if c["name"] == "Port")
        assert "Zürich" in port["categories"]


def test_numeric_target_with_a_missing_word(tmp_path, runs_root):
    header, rows = helpers.regression_rows(rows=60)
    rows[7][-1] = "unknown"
    path = helpers.write_csv(tmp_path / "r.csv", header, rows)
    result = helpers.invoke("train", "--data", path, "--target", "y", "--epochs", 1)
    helpers.assert_ok(result)
    assert "Recipe: regression" in result.output
    assert "Dropped 1 row whose target 'y' is missing" in result.output


def test_parquet_with_a_named_index(tmp_path):
    table = _messy().set_index("Name")
    table.to_parquet(tmp_path / "p.parquet")
    data = _load(tmp_path / "p.parquet")
    assert "Name" in data.meta["left_out"] and "PassengerId" in data.meta["left_out"]


def test_a_named_dataset_replaces_the_recorded_file_and_its_columns():
    recorded = Source(data="/x/train.csv", target="y", drop=("id",), missing="drop")
    combined = Source(dataset="breast_cancer").over(recorded)
    assert combined == Source(dataset="breast_cancer", missing="drop")
    other_file = Source(data="/x/other.csv").over(recorded)
    assert other_file == Source(data="/x/other.csv", target="y", drop=("id",), missing="drop")


def test_zero_test_fraction_without_a_test_file_is_refused(tmp_path, runs_root):
    result = helpers.invoke("train", "binary", "--data", _write(_messy(), tmp_path / "p.csv"),
                            "--target", "Survived", "--set", "test_fraction=0.0", "--epochs", 1)
    helpers.assert_user_error(result, "test_fraction = 0", "--test-data")
    assert helpers.run_folders(runs_root) == []


def test_a_quantity_is_not_a_multiclass_target(tmp_path, runs_root):
    table = _messy(300)
    table["Fare"] = np.arange(300) * 3 + 7
    result = helpers.invoke("train", "multiclass", "--data", _write(table, tmp_path / "q.csv"),
                            "--target", "Fare", "--epochs", 1)
    helpers.assert_user_error(result, "300 distinct numbers", "regression")
    assert helpers.run_folders(runs_root) == []


def test_evaluate_refuses_a_run_whose_data_changed(tmp_path, runs_root):
    path = _write(_messy(), tmp_path / "p.csv")
    helpers.assert_ok(helpers.invoke("train", "binary", "--data", path, "--target", "Survived",
                                     "--epochs", 1))
    _write(_messy(seed=5), path)
    result = helpers.invoke("evaluate", helpers.only_run(runs_root, "binary"))
    helpers.assert_user_error(result, "changed since it was trained", "--data FILE")


def test_binary_scores_average_precision_beside_roc_auc():
    from dlref.recipes import binary

    y = np.array([0, 1, 0, 1, 0, 0, 0, 0])
    scores = binary.score(y, [0.1, 0.9, 0.8, 0.3, 0.2, 0.2, 0.1, 0.1], {"threshold": 0.5})
    # The positives rank 1st and 3rd: precision 1 and 2/3 where each is found.
    assert scores["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert list(scores)[:2] == ["roc_auc", "pr_auc"]
