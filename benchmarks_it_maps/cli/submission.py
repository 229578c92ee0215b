"""``brainscore submission``: the Brain-Score upload zip (or the plugin folders) generated from the registries."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submission", help="build the Brain-Score submission zip (plugin folders for data, benchmarks, models)",
        description="Writes brainscore-vision plugin folders (data/arcaro2020, benchmarks/arcaro2020, "
                    "one folder per model) into a zip for brain-score.org's upload page, or into a folder "
                    "(--folders). The folders only register identifiers; requirements.txt installs this package.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="the zip file to write (FILE.zip); with --data-from: the folder to write")
    target.add_argument("--folders", help="write the plugin folders into this directory instead (replaced whole)")
    target.add_argument("--check", metavar="DIR",
                        help="compare DIR (e.g. plugins/) with freshly generated folders; exit 1 if they differ")
    parser.add_argument("--data-from", metavar="ARCHIVE", default=None,
                        help="package this archive (Arcaro2020.zip or the simulated twin) in BrainIO format into "
                             "OUT/packages and write plugin folders that load it from S3 into OUT/plugins")
    parser.add_argument("--upload", metavar="s3://BUCKET/PREFIX", default=None,
                        help="with --data-from: upload the packages there with boto3 (credentials and "
                             "AWS_ENDPOINT_URL from the environment) and record their version ids")
    parser.add_argument("--models", default=None,
                        help="ID,ID | @FILE | category:NAME (default: every harmonized model)")
    parser.add_argument("--requirement", default=None,
                        help="requirements.txt line that installs this package (default: "
                             "BRAINSCORE_ITMAPS_REQUIREMENT, else a git URL of setup.py's url at tag vVERSION, a "
                             "placeholder: pass this wherever the package really lives; e.g. brainscore-itmaps @ "
                             "git+https://HOST/OWNER/REPO@TAG or @ file:///PATH.whl)")
    parser.set_defaults(func=run_submission)


def run_submission(args: argparse.Namespace) -> int:
    from benchmarks_it_maps.submission import plugins as submission
    from benchmarks_it_maps.cli import UserError
    from benchmarks_it_maps.runs.sweep import SweepError, parse_models

    models = None
    if args.models:
        try:
            models = parse_models(args.models)
        except SweepError as error:
            raise UserError(str(error)) from None
        from harmonized_models import get_entry
        for identifier in models:
            try:
                get_entry(identifier)
            except KeyError as error:
                raise UserError(f"--models: {error.args[0] if error.args else error}") from None
    if args.upload and not args.data_from:
        raise UserError("--upload needs --data-from ARCHIVE (the packages to upload)")
    if args.data_from:
        return _package(args, models)
    if args.check:
        problems = submission.compare_plugins(args.check, models, requirement=args.requirement)
        for problem in problems:
            print(problem)
        print(f"{args.check}: {'out of date, regenerate with: brainscore submission --folders ' + args.check if problems else 'in sync with the registries'}")
        return 1 if problems else 0
    if args.folders:
        names = submission.write_plugins(args.folders, models, requirement=args.requirement)
        print(f"wrote {len(names)} files into {args.folders}")
        return 0
    try:
        names = submission.build_submission(args.out, models, requirement=args.requirement)
    except ValueError as error:
        raise UserError(str(error)) from None
    folders = sorted({"/".join(name.split("/")[:2]) for name in names})
    print(f"wrote {args.out}: {len(folders)} plugin folders ({', '.join(folders)}); upload it at "
          "https://www.brain-score.org/vision (Submit)")
    return 0


def _package(args: argparse.Namespace, models) -> int:
    from pathlib import Path

    from botocore.exceptions import BotoCoreError, ClientError

    from benchmarks_it_maps.cli import UserError
    from benchmarks_it_maps.data.matfile import MatFileError
    from benchmarks_it_maps.submission import plugins as submission
    from benchmarks_it_maps.submission.packaging import PackagingError, parse_s3_url
    if not args.out:
        raise UserError("--data-from needs --out DIR (the folder for the packages and plugin folders)")
    if not Path(args.data_from).exists():
        raise UserError(f"--data-from {args.data_from}: no such file or folder")
    try:
        if args.upload:
            parse_s3_url(args.upload)
        manifest = submission.package_submission(args.data_from, args.out, upload=args.upload, models=models,
                                                 requirement=args.requirement)
    except (PackagingError, MatFileError) as error:
        raise UserError(str(error)) from None
    except (BotoCoreError, ClientError) as error:
        raise UserError(f"--upload {args.upload}: {error}") from None
    stimuli = manifest["stimulus_set"]
    print(f"packaged {manifest['dataset']}: stimulus set {stimuli['csv']} (sha1 {stimuli['csv_sha1']}), "
          f"{stimuli['zip']} (sha1 {stimuli['zip_sha1']}), {len(manifest['assemblies'])} assemblies into "
          f"{Path(args.out) / 'packages'}")
    where = f"uploaded to s3://{manifest['bucket']}" if args.upload else \
        f"not uploaded (plugin folders name {manifest['bucket']}, version 'null')"
    print(f"{where}; plugin folders in {Path(args.out) / 'plugins'}")
    return 0
