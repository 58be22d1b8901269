"""create calls table

Revision ID: ba8c60a76780
Revises:
Create Date: 2025-10-01 12:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = "ba8c60a76780"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "calls",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False, comment="Owner of the call"),
        sa.Column("phone_number", sa.String(length=32), nullable=False,
                  comment="Number dialled, E.164"),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False,
                  comment="False once the call has ended"),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name="calls_pkey"),
    )
    op.create_index("idx_user_active", "calls", ["user_id", "is_active"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("idx_user_active", table_name="calls")
    op.drop_table("calls")
