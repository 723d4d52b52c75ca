"""Small shared pieces for the tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SINGLE = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
  </Choices>
</View>"""

MULTI = """<View>
  <Text name="body" value="$body"/>
  <Choices name="topics" toName="body" choice="multiple">
    <Choice value="Sports" hint="games and athletes"/>
    <Choice value="Politics"/>
    <Choice value="Tech"/>
  </Choices>
</View>"""

NO_CHOICES = """<View>
  <Text name="text" value="$text"/>
  <Labels name="ner" toName="text"><Label value="PER"/><Label value="ORG"/></Labels>
</View>"""

POSITIVE = [
    "I love this, wonderful and great",
    "great product, happy and delighted",
    "wonderful service, love it",
    "happy with it, great value",
    "excellent, love the quality",
    "delighted, wonderful experience",
]
NEGATIVE = [
    "I hate this, terrible and awful",
    "awful product, sad and angry",
    "terrible service, hate it",
    "angry with it, awful value",
    "horrible, hate the quality",
    "disappointed, terrible experience",
]


def choice(from_name: str, to_name: str, *labels: str) -> dict:
    return {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": list(labels)}}
