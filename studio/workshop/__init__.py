"""Workshop material: exercise widgets, labs and pictures for the guided notebooks in
``apps/workshop/``. It uses the engine through its public API and the Studio's figure
functions; it is imported only by the notebooks (``import studio.workshop``)."""

from .budget import FrontFigure, PlanPicker, plan_exercise
from .checks import Verdict, check_budget, check_choice, check_number, parse_number
from .exercise import Exercise, choice_exercise, number_exercise, text_exercise
from .index import NotebookEntry, list_notebooks, nav_html
from .labs import PruneLab, QuantLab, SizeLab, VerifyPanel
from .style import Header

__all__ = [
    "Exercise",
    "FrontFigure",
    "Header",
    "NotebookEntry",
    "PlanPicker",
    "PruneLab",
    "QuantLab",
    "SizeLab",
    "Verdict",
    "VerifyPanel",
    "check_budget",
    "check_choice",
    "check_number",
    "choice_exercise",
    "list_notebooks",
    "nav_html",
    "number_exercise",
    "parse_number",
    "plan_exercise",
    "text_exercise",
]
